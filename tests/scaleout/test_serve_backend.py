"""`drifa-edge serve` with `backend = "ray"` on a real local Ray: the DICOM front stays in the
service, inference runs in a Ray Serve replica; the records are predict's (OOD included)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serve"))  # serve_helpers

from serve_helpers import make_study, send, serve_config, start_service, wait_for  # noqa: E402

from drifa_edge.errors import ConfigError  # noqa: E402
from drifa_edge.inference.engine import EngineConfig  # noqa: E402
from drifa_edge.inference.manifest import Case  # noqa: E402
from drifa_edge.inference.predict import predict_cases  # noqa: E402
from drifa_edge.runtimes.base import RuntimeOptions  # noqa: E402

# Serve's controller and a replica that imports torch start inside the test: ~18 s on the
# session's Ray on a busy 2-core machine, so it is part of the default run
pytestmark = [pytest.mark.ray]

RAY = {"deployment": {"replicas": 1, "cpus_per_replica": 0.5, "max_batch_size": 4, "batch_wait_s": 0.05}}


def test_dicom_front_with_ray_serve_inference(ray_local, ood_checkpoint, tmp_path):
    from ray import serve

    config = serve_config(
        tmp_path / "root", inference={"samples": 4, "seed": 0, "backend": "ray", "ray": RAY}
    )
    svc = start_service(ood_checkpoint, config)
    try:
        assert svc.predictor.warm and "(Ray Serve)" in svc.predictor.info["device"]
        studies = [make_study(i) for i in range(3)]
        for study in studies:
            assert send(study, svc.dicom_port) == [0, 0]  # acknowledged: stored by the local front
        wait_for(lambda: svc.store.counts()["DONE"] == 3, 120)
        cases = svc.store.cases()
        for case in cases:
            record = svc.store.result(case.case_id)
            saved = svc.cfg.root / "results" / case.case_id / "v1.json"
            assert saved.is_file() and record["result_version"] == 1  # DONE only with the result stored
            assert record["worker"]["pid"] != os.getpid() and record["worker"]["actor_id"]  # a replica ran it
            assert record["dicom"]["study_instance_uid"] in {s[0].StudyInstanceUID for s in studies}
            blood = record["tasks"]["blood"]  # ood.npz of the artifact: every blood case OOD
            assert blood["ood"] is True and blood["referral"]["reason"] == "ood"
            assert record["tasks"]["derm"]["ood"] is False and record["tasks"]["derm"]["ood_score"] > 0
            # the same record as local predict on the stored files (same masks: seed, case id)
            want: list[dict] = []
            inputs = {t: Path(p) for t, p in case.inputs.items()}
            predict_cases(ood_checkpoint, [Case(case.case_id, inputs)], None, options=RuntimeOptions(threads=1),
                          engine_cfg=EngineConfig(samples=4, seed=0), on_record=want.append)  # fmt: skip
            assert record["mc_seed"] == want[0]["mc_seed"] and record["inputs"] == want[0]["inputs"]
            assert record["model_sha256"] == want[0]["model_sha256"]
            for task in ("derm", "blood"):
                got_t, want_t = record["tasks"][task], want[0]["tasks"][task]
                assert (got_t["predicted"], got_t["refer"], got_t["ood"]) == (
                    want_t["predicted"], want_t["refer"], want_t["ood"],
                )  # fmt: skip
                np.testing.assert_allclose(  # batches may differ: float32 rounding of another shape
                    list(got_t["probabilities"].values()), list(want_t["probabilities"].values()), rtol=1e-4
                )
                np.testing.assert_allclose(got_t["ood_score"], want_t["ood_score"], rtol=1e-4)

        # a second front joining the running application refuses other settings, naming them
        from drifa_edge.scaleout.backend import RayPredictor

        with pytest.raises(ConfigError, match="samples: service 8, application 4"):
            RayPredictor.open(
                ood_checkpoint, "torch", RuntimeOptions(), EngineConfig(samples=8, seed=0), deploy=False
            )
        # ... and with the same settings it shares the application, which it leaves running at close
        joined = RayPredictor.open(
            ood_checkpoint, "torch", RuntimeOptions(), EngineConfig(samples=4, seed=0), deploy=False
        )
        case = cases[0]
        (again,) = joined.predict([Case(case.case_id, {t: Path(p) for t, p in case.inputs.items()})])
        joined.close()
        stored = svc.store.result(case.case_id)
        assert again["mc_seed"] == stored["mc_seed"] and again["worker"]["pid"] == stored["worker"]["pid"]
        for task in ("derm", "blood"):  # same masks; the batch may differ (float32 rounding)
            np.testing.assert_allclose(
                list(again["tasks"][task]["probabilities"].values()),
                list(stored["tasks"][task]["probabilities"].values()),
                rtol=1e-4,
            )
        assert "drifa-edge" in serve.status().applications
    finally:
        svc.stop()
    try:
        assert "drifa-edge" not in serve.status().applications  # the service removed what it deployed
    finally:
        serve.shutdown()  # the controller too: the session's Ray goes on clean


@pytest.mark.slow
def test_ray_outage_fails_the_batch_visibly(ray_local, ood_checkpoint, tmp_path):
    """The deployment disappears under the service: the case ends FAILED (inference_error, in
    the audit), never DONE without a stored result and never silently stuck."""
    from ray import serve

    from drifa_edge.serve.audit import read_audit

    ray_cfg = {**RAY, "attempts": 1, "timeout_s": 10.0}
    config = serve_config(tmp_path / "root", inference={"samples": 4, "backend": "ray", "ray": ray_cfg})
    svc = start_service(ood_checkpoint, config)
    try:
        serve.delete("drifa-edge")
        assert send(make_study(7), svc.dicom_port) == [0, 0]  # the front still stores and acknowledges
        wait_for(lambda: svc.store.counts()["FAILED"] == 1, 90)
        assert svc.store.counts()["DONE"] == 0
        failed = [e for e in read_audit(svc.cfg.root / "audit.jsonl") if e["event"] == "failed"]
        assert failed and failed[0]["reason"] == "inference_error", failed
    finally:
        svc.stop()
        serve.shutdown()


def replica_pids() -> list[int]:
    """Pids of this session's Serve replica processes (their title names the deployment)."""
    import psutil

    out = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if "ServeReplica:drifa-edge" in " ".join(proc.cmdline()):
                out.append(proc.pid)
        except psutil.Error:
            continue
    return out


@pytest.mark.slow
def test_killed_replica_loses_no_study(ray_local, ood_checkpoint, tmp_path):
    """SIGKILL a replica while cases are being inferred: the service sends the lost requests
    again (``attempts``) and every study ends DONE with a stored result."""
    import signal

    from ray import serve

    ray_cfg = {
        "deployment": {"replicas": 2, "cpus_per_replica": 0.5, "max_batch_size": 2, "batch_wait_s": 0.05}
    }
    config = serve_config(
        tmp_path / "root", inference={"samples": 64, "batch_size": 4, "backend": "ray", "ray": ray_cfg}
    )
    svc = start_service(ood_checkpoint, config)
    try:
        pids = replica_pids()
        assert len(pids) == 2, pids
        for i in range(8):
            assert send(make_study(20 + i), svc.dicom_port) == [0, 0]
        wait_for(lambda: svc.store.counts()["INFERRING"] > 0, 120, interval=0.02)
        time.sleep(0.3)  # the batch's requests reach the replicas
        os.kill(pids[0], signal.SIGKILL)
        wait_for(lambda: svc.store.counts()["DONE"] + svc.store.counts()["FAILED"] == 8, 240)
        assert svc.store.counts()["DONE"] == 8, svc.store.counts()  # none lost, none failed
        # whether our resend ran ("replica lost" logged) or Serve's router got every request
        # answered by itself depends on timing (two runs here logged no resend); nothing may be lost
    finally:
        svc.stop()
        serve.shutdown()
