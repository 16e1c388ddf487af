"""The Ray Serve deployment on a real local Ray: the HTTP case API, dynamic batching,
a replica killed under requests, the stuck-runtime health check."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
from inference_helpers import write_good_case
from scaleout_helpers import TASKS

from drifa_edge.inference.engine import EngineConfig
from drifa_edge.inference.manifest import Case
from drifa_edge.inference.predict import predict_cases
from drifa_edge.inference.writers import read_jsonl
from drifa_edge.runtimes.base import RuntimeOptions
from drifa_edge.scaleout.config import ServeConfig

pytestmark = [pytest.mark.ray, pytest.mark.slow]

CFG = EngineConfig(samples=4, seed=0)
OPTIONS = RuntimeOptions(threads=1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post_case(
    port: int, files: dict[str, Path], case_id: str | None = None, timeout: float = 120
) -> tuple[int, dict]:
    """multipart/form-data POST /v1/cases with the standard library."""
    boundary = uuid.uuid4().hex
    parts = []
    if case_id is not None:
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="case_id"\r\n\r\n{case_id}\r\n'.encode()
        )
    for field, path in files.items():
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{path.name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        )
        parts.append(head.encode() + path.read_bytes() + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/cases", data=body, method="POST",
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        text = e.read().decode(errors="replace")
        try:
            return e.code, json.loads(text)
        except json.JSONDecodeError:
            return e.code, {"error": text}


@pytest.fixture()
def serve_app(ray_local, checkpoint):
    """Deploy, yield (port, handle); shut Serve down after the test."""
    from ray import serve

    from drifa_edge.scaleout.serve import deploy

    deployed = []

    def start(artifact: Path | None = None, **cfg) -> tuple[int, object]:
        port = free_port()
        handle = deploy(
            artifact or checkpoint, options=OPTIONS, engine_cfg=CFG, cfg=ServeConfig(port=port, **cfg)
        )
        deployed.append(port)
        return port, handle

    yield start
    if deployed:
        serve.shutdown()


def cases_on_disk(folder: Path, n: int) -> list[Case]:
    out = []
    for i in range(n):
        derm, blood = write_good_case(folder, f"s{i}", seed=100 + i)
        out.append(Case(f"s{i}", {"derm": derm, "blood": blood}))
    return out


def test_http_case_api_batches_and_matches_local_predict(serve_app, checkpoint, tmp_path):
    port, _ = serve_app(replicas=1, cpus_per_replica=0.5, max_batch_size=4, batch_wait_s=0.5)
    cases = cases_on_disk(tmp_path, 6)
    results: dict[str, tuple[int, dict]] = {}

    def send(case: Case) -> None:
        results[case.case_id] = post_case(port, dict(case.inputs), case.case_id)

    threads = [threading.Thread(target=send, args=(c,)) for c in cases]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    assert sorted(results) == [c.case_id for c in cases]
    predict_cases(checkpoint, cases, tmp_path / "local.jsonl", options=OPTIONS, engine_cfg=CFG)
    local = {r["case_id"]: r for r in read_jsonl(tmp_path / "local.jsonl")}
    for case in cases:
        status, record = results[case.case_id]
        assert status == 200, record
        want = local[case.case_id]
        assert record["inputs"] == {t: case.inputs[t].name for t in TASKS}  # the uploaded names
        assert record["mc_seed"] == want["mc_seed"] and record["model_sha256"] == want["model_sha256"]
        for task in TASKS:  # same masks; batches differ, so float32 rounding may show in digit 6
            got_t, want_t = record["tasks"][task], want["tasks"][task]
            assert (got_t["predicted"], got_t["refer"]) == (want_t["predicted"], want_t["refer"])
            np.testing.assert_allclose(
                list(got_t["probabilities"].values()), list(want_t["probabilities"].values()), rtol=1e-4
            )
    assert max(r["worker"]["batch_cases"] for _, r in results.values()) > 1  # dynamic batching happened
    assert {r["worker"]["pid"] for _, r in results.values()} != {os.getpid()}


def test_http_records_carry_the_ood_score(serve_app, ood_checkpoint, tmp_path):
    """With ood.npz in the artifact, the HTTP record has predict's ood_score / ood / reason."""
    port, _ = serve_app(artifact=ood_checkpoint, replicas=1, cpus_per_replica=0.5)
    (case,) = cases_on_disk(tmp_path, 1)
    status, record = post_case(port, dict(case.inputs), case.case_id)
    assert status == 200, record
    predict_cases(ood_checkpoint, [case], tmp_path / "local.jsonl", options=OPTIONS, engine_cfg=CFG)
    (want,) = read_jsonl(tmp_path / "local.jsonl")
    for task in TASKS:
        got_t, want_t = record["tasks"][task], want["tasks"][task]
        assert (got_t["ood"], got_t["refer"], got_t["referral"]) == (
            want_t["ood"],
            want_t["refer"],
            want_t["referral"],
        )
        np.testing.assert_allclose(got_t["ood_score"], want_t["ood_score"], rtol=1e-4)
    assert record["tasks"]["blood"]["referral"]["reason"] == "ood"


def test_http_errors(serve_app, tmp_path):
    port, _ = serve_app(replicas=1, cpus_per_replica=0.5, max_upload_mb=0.01)
    derm, blood = write_good_case(tmp_path, "e", seed=1)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot an image")
    status, body = post_case(port, {"derm": tmp_path / "broken.png", "blood": blood}, "bad-1")
    assert status == 422 and body["state"] == "FAILED" and "broken.png" in body["reason"], body
    assert "drifa-case-" not in body["reason"]  # the replica's temp copy is not shown
    assert body["result"]["status"] == "error" and body["result"]["case_id"] == "bad-1"
    status, body = post_case(port, {"derm": derm}, "c1")
    assert status == 400 and "missing ['blood']" in body["error"]
    status, body = post_case(port, {"derm": derm, "blood": blood, "xray": blood}, "c2")
    assert status == 400 and "unknown field(s) ['xray']" in body["error"]
    status, body = post_case(port, {"derm": derm, "blood": blood}, "no spaces/allowed")
    assert status == 400 and "case_id" in body["error"]
    big = tmp_path / "big.npy"
    np.save(big, np.zeros((64, 64), np.float32))  # 16 kB > 0.01 MB
    status, body = post_case(port, {"derm": derm, "blood": big}, "c3")
    assert status == 413 and "over the limit" in body["error"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=30) as r:
        assert json.loads(r.read())["ready"] is True


def test_killed_replica_loses_no_request(serve_app, tmp_path):
    """SIGKILL the replica that answered first while 12 requests are in flight: every request
    ends in a 200 after client retries on 5xx, and each failed attempt was a clear 5xx."""
    port, handle = serve_app(replicas=2, cpus_per_replica=0.5, max_batch_size=2, batch_wait_s=0.05)
    cases = cases_on_disk(tmp_path, 12)
    attempts: dict[str, list[int]] = {c.case_id: [] for c in cases}
    final: dict[str, dict] = {}
    killed: list[int] = []
    lock = threading.Lock()

    def send(case: Case) -> None:
        for _ in range(4):
            status, body = post_case(port, dict(case.inputs), case.case_id)
            attempts[case.case_id].append(status)
            if status == 200:
                final[case.case_id] = body
                with lock:
                    if not killed:
                        killed.append(body["worker"]["pid"])
                        os.kill(body["worker"]["pid"], signal.SIGKILL)
                return
            assert status >= 500, body  # an error the client can see and act on
            time.sleep(1.0)

    threads = [threading.Thread(target=send, args=(c,)) for c in cases]
    for t in threads:
        t.start()
        time.sleep(0.05)
    for t in threads:
        t.join(timeout=300)
    assert killed
    assert sorted(final) == sorted(attempts), attempts  # every request answered, none silently lost
    for case_id, record in final.items():
        assert record["case_id"] == case_id and record["status"] == "ok"
    # the Python path retries by itself
    from drifa_edge.scaleout.serve import predict_files

    case = cases[0]
    files = {t: (p.name, p.read_bytes()) for t, p in case.inputs.items()}
    record = predict_files(handle, case.case_id, files)
    assert record["status"] == "ok" and record["mc_seed"] == final[case.case_id]["mc_seed"]
    assert record["tasks"]["derm"]["predicted"] == final[case.case_id]["tasks"]["derm"]["predicted"]


def test_stuck_engine_fails_the_health_check(ray_local, checkpoint):
    from drifa_edge.scaleout.serve import deployment_class

    replica = deployment_class()(str(checkpoint), "torch", OPTIONS, CFG, ServeConfig(stuck_after_s=5))
    try:
        replica.check_health()  # idle: healthy
        replica._busy_since = time.monotonic() - 6  # as if an engine call had hung for 6 s
        with pytest.raises(RuntimeError, match="stuck"):
            replica.check_health()
    finally:
        replica.predictor.close()
