"""`score_cases` / `drifa-edge score` on a real local Ray: same records as local predict,
bad files, resume, Parquet, a killed actor, two nodes, an in-graph runtime."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from inference_helpers import write_good_case, write_manifest, write_png
from scaleout_helpers import TASKS, good_manifest

from drifa_edge.errors import ConfigError
from drifa_edge.inference.engine import EngineConfig
from drifa_edge.inference.manifest import read_manifest
from drifa_edge.inference.predict import predict_cases
from drifa_edge.inference.writers import read_jsonl
from drifa_edge.runtimes.base import RuntimeOptions
from drifa_edge.scaleout.batch import score_cases
from drifa_edge.scaleout.config import BatchConfig

# Every test starts real Ray actors (which import torch): 20-45 s each on a busy 2-core machine.
# The default run keeps one (Ray == local predict, OOD fields, actor processes); the rest are slow.
pytestmark = [pytest.mark.ray]

ONE_THREAD = RuntimeOptions(threads=1)
CFG = EngineConfig(samples=4, seed=0)
# two actors of 0.75 CPU and decode tasks of 0.25 fit the fixture's 2 CPUs together
TWO_ACTORS = BatchConfig(actors=2, cpus_per_actor=0.75, decode_cpus=0.25, decode_block=4, batch_size=4)


def without_worker(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "worker"} for r in records]


def local(checkpoint, cases, path: Path, batch_size: int = 4, **kw) -> list[dict]:
    predict_cases(checkpoint, cases, path, options=ONE_THREAD, batch_size=batch_size, **kw)
    return read_jsonl(path)


def test_same_records_as_local_predict_bit_for_bit(ray_local, ood_checkpoint, tmp_path):
    """Torch with per-case seeds and the same batches (4 cases, 1 thread): identical lines, the
    OOD score and flag of the artifact's ood.npz included (issue 18: the same code as predict)."""
    cases = read_manifest(good_manifest(tmp_path, 8), TASKS)
    summary = score_cases(
        ood_checkpoint, cases, tmp_path / "ray.jsonl", options=ONE_THREAD, engine_cfg=CFG, batch=TWO_ACTORS
    )
    ray_records = read_jsonl(tmp_path / "ray.jsonl")
    assert (summary.ok, summary.failed, summary.exit_code, summary.duplicates) == (8, 0, 0, 0)
    assert [r["case_id"] for r in ray_records] == [c.case_id for c in cases]  # manifest order
    assert without_worker(ray_records) == local(
        ood_checkpoint, cases, tmp_path / "local.jsonl", engine_cfg=CFG
    )
    for r in ray_records:  # really run in actors, not in this process
        assert r["worker"]["actor_id"] and r["worker"]["pid"] != os.getpid()
        derm, blood = r["tasks"]["derm"], r["tasks"]["blood"]
        assert derm["ood_score"] > 0 and derm["ood"] is False  # threshold 1e30
        assert blood["ood"] is True and blood["refer"] is True and blood["referral"]["reason"] == "ood"


def _mixed_manifest(folder: Path) -> tuple[Path, dict[str, str]]:
    rows = []
    for i in range(5):
        d, b = write_good_case(folder, f"g{i}", seed=i)
        rows.append((f"g{i}", d.name, b.name))
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not an image")
    nan = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    nan[3, 3] = np.nan
    np.save(folder / "nan.npy", nan)
    write_png(folder / "gray.png", np.random.default_rng(1).random((40, 40)))
    b0 = rows[0][2]
    bad = {
        "corrupt": ("corrupt.png", b0, "corrupt.png"),
        "nan": (rows[0][1], "nan.npy", "nan.npy"),
        "missing_cell": ("", b0, "missing modality derm"),
        "gray_for_rgb": ("gray.png", b0, "gray.png"),
        "no_file": ("nowhere.png", b0, "nowhere.png"),
    }
    rows[2:2] = [(c, d, b) for c, (d, b, _) in bad.items()]  # bad cases between good ones
    return write_manifest(folder / "mixed.csv", rows), {c: why for c, (_, _, why) in bad.items()}


@pytest.mark.slow
def test_bad_files_and_referrals_as_local_predict(ray_local, checkpoint, tmp_path):
    manifest, culprits = _mixed_manifest(tmp_path)
    cases = read_manifest(manifest, TASKS)
    summary = score_cases(
        checkpoint, cases, tmp_path / "ray.jsonl", options=ONE_THREAD, engine_cfg=CFG, batch=TWO_ACTORS
    )
    assert (summary.ok, summary.failed, summary.exit_code) == (5, 5, 9)
    got = {r["case_id"]: r for r in read_jsonl(tmp_path / "ray.jsonl")}
    want = {r["case_id"]: r for r in local(checkpoint, cases, tmp_path / "local.jsonl", engine_cfg=CFG)}
    assert got.keys() == want.keys()
    for case, why in culprits.items():
        assert got[case]["status"] == "error" and why in got[case]["error"]
        assert without_worker([got[case]]) == [want[case]]  # the same message, word for word
    for case in (f"g{i}" for i in range(5)):
        # the same masks; the batches differ (bad cases are not in them), so the numbers may differ
        # by float32 rounding of a differently shaped call, which the 6-digit output can show
        g, w = got[case], want[case]
        assert g["mc_seed"] == w["mc_seed"]
        for task in TASKS:
            gt, wt = g["tasks"][task], w["tasks"][task]
            assert (gt["predicted"], gt["refer"], gt["referral"]["metric"]) == (
                wt["predicted"], wt["refer"], wt["referral"]["metric"],
            )  # fmt: skip
            for key in ("probabilities", "std"):
                np.testing.assert_allclose(
                    list(gt[key].values()), list(wt[key].values()), rtol=1e-4, atol=1e-6
                )
            np.testing.assert_allclose(
                gt["mutual_information"], wt["mutual_information"], rtol=1e-3, atol=1e-6
            )


@pytest.mark.slow
def test_resume_parquet_and_existing_output(ray_local, checkpoint, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    manifest = good_manifest(tmp_path, 6)
    cases = read_manifest(manifest, TASKS)
    out = tmp_path / "ray.jsonl"
    kw = {"options": ONE_THREAD, "engine_cfg": CFG, "batch": TWO_ACTORS}
    score_cases(checkpoint, cases[:4], out, **kw)
    with pytest.raises(ConfigError, match="--resume"):
        score_cases(checkpoint, cases, out, **kw)
    summary = score_cases(checkpoint, cases, out, resume=True, parquet_path=tmp_path / "p.parquet", **kw)
    assert (summary.skipped, summary.ok) == (4, 2)
    records = read_jsonl(out)
    assert [r["case_id"] for r in records] == [f"g{i}" for i in range(6)]  # once each, in order
    table = pq.read_table(tmp_path / "p.parquet").to_pylist()
    assert [row["case_id"] for row in table] == [r["case_id"] for r in records]
    for row, r in zip(table, records, strict=True):
        assert row["derm_predicted"] == r["tasks"]["derm"]["predicted"]
        assert row["blood_p_b"] == r["tasks"]["blood"]["probabilities"]["b"]
        assert row["worker_pid"] == r["worker"]["pid"]


@pytest.mark.slow
def test_killed_actor_is_restarted_and_nothing_is_lost_or_doubled(ray_local, checkpoint, tmp_path):
    """SIGKILL the actor that wrote the first record; Ray restarts it and re-runs its block."""
    cases = read_manifest(good_manifest(tmp_path, 16), TASKS)
    killed: list[int] = []

    def kill_first_worker(record: dict) -> None:
        if not killed:
            killed.append(record["worker"]["pid"])
            os.kill(record["worker"]["pid"], signal.SIGKILL)

    one_actor = BatchConfig(
        actors=1, cpus_per_actor=1, decode_cpus=0.5, decode_block=2, batch_size=2, blocks_in_flight=1
    )
    cfg = EngineConfig(samples=64, seed=0)  # enough work per block that the kill lands mid-run
    summary = score_cases(
        checkpoint, cases, tmp_path / "ray.jsonl", options=ONE_THREAD, engine_cfg=cfg, batch=one_actor,
        on_record=kill_first_worker,
    )  # fmt: skip
    records = read_jsonl(tmp_path / "ray.jsonl")
    assert [r["case_id"] for r in records] == [c.case_id for c in cases]  # complete, no duplicates
    assert summary.ok == 16 and summary.failed == 0
    pids = {r["worker"]["pid"] for r in records}
    assert killed[0] in pids and len(pids) >= 2, f"no restarted actor: {pids}"  # the kill hit mid-run
    want = local(checkpoint, cases, tmp_path / "local.jsonl", batch_size=2, engine_cfg=cfg)
    assert without_worker(records) == want  # the re-run block gave the same numbers (same seeds)


@pytest.mark.slow
def test_two_nodes_two_actor_processes(checkpoint, tmp_path, monkeypatch):
    """`drifa-edge score --ray ADDRESS` against a two-node cluster on this machine."""
    pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    folder = Path(tempfile.mkdtemp(prefix="drifa-ray2-", dir="/tmp"))  # short: socket paths
    (folder / "ray").mkdir()
    monkeypatch.setenv("RAY_TMPDIR", str(folder))  # every node's session files (and the CLI's)
    cluster = Cluster(
        initialize_head=True,
        connect=False,
        head_node_args={"num_cpus": 1, "object_store_memory": 96 * 2**20, "include_dashboard": False},
    )  # fmt: skip
    try:
        cluster.add_node(num_cpus=1, object_store_memory=96 * 2**20)
        cluster.wait_for_nodes()
        manifest = good_manifest(tmp_path, 12)
        out = tmp_path / "two.jsonl"
        cmd = [
            sys.executable, "-c", "from drifa_edge.cli import main; main()", "score", str(checkpoint), "--manifest", str(manifest),
            "--out", str(out), "--ray", cluster.address, "--actors", "2", "--cpus-per-actor", "0.75",
            "--decode-cpus", "0.25", "--decode-block", "2", "--batch-size", "2", "-T", "64", "--threads", "1",
            "--blocks-in-flight", "1",  # Ray prefers the actor beside the data while it has room
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
    finally:
        cluster.shutdown()
        shutil.rmtree(folder, ignore_errors=True)
    records = read_jsonl(out)
    assert sorted(r["case_id"] for r in records) == sorted(f"g{i}" for i in range(12))
    workers = {(r["worker"]["node_id"], r["worker"]["pid"]) for r in records}
    assert len({pid for _, pid in workers}) >= 2, workers
    assert len({node for node, _ in workers}) == 2, workers  # one actor on each node
    assert "12 ok, 0 failed" in proc.stdout


@pytest.mark.slow
def test_in_graph_runtime_within_mc_noise(ray_local, checkpoint, tmp_path):
    """ONNX Runtime draws its masks in the graph (not seedable): judge Ray against local
    predict like the drift gate's KL criterion does, mean KL to a reference run against the
    mean KL of a second local run (the MC noise), at most ``kl_ratio_max`` times it."""
    pytest.importorskip("onnxruntime")
    from drifa_edge.drift.policy import DriftPolicy
    from drifa_edge.export import export_all
    from drifa_edge.metrics.agreement import kl_divergence

    export = tmp_path / "export"
    export_all(checkpoint, export, openvino=False, check=False)
    cases = read_manifest(good_manifest(tmp_path, 16), TASKS)
    cfg = EngineConfig(samples=100, seed=0)
    kw = {"runtime": "onnxruntime", "engine_cfg": cfg}
    ref = local(export, cases, tmp_path / "ref.jsonl", **kw)
    again = local(export, cases, tmp_path / "again.jsonl", **kw)
    score_cases(export, cases, tmp_path / "ray.jsonl", options=ONE_THREAD, batch=TWO_ACTORS, **kw)
    ray_records = read_jsonl(tmp_path / "ray.jsonl")
    assert {r["runtime"] for r in ray_records} == {"onnxruntime"} and {r["mc_seed"] for r in ray_records} == {
        None
    }

    def probs(records, task):
        return np.array([list(r["tasks"][task]["probabilities"].values()) for r in records])

    policy = DriftPolicy()
    for task in TASKS:
        p_ref, p_again, p_ray = probs(ref, task), probs(again, task), probs(ray_records, task)
        # the gate's KL rule: mean KL to the reference within kl_ratio_max of what two local runs show
        noise = max(float(kl_divergence(p_ref, p_again).mean()), policy.kl_noise_min)
        assert float(kl_divergence(p_ref, p_ray).mean()) <= policy.kl_ratio_max * noise, task
        agree_noise = (p_ref.argmax(1) == p_again.argmax(1)).mean()
        assert (p_ref.argmax(1) == p_ray.argmax(1)).mean() >= agree_noise - 2 / len(cases)


@pytest.mark.slow
def test_more_actors_than_the_cluster_holds_is_a_clear_error(ray_local, checkpoint, tmp_path):
    cases = read_manifest(good_manifest(tmp_path, 2), TASKS)
    too_many = BatchConfig(actors=3, cpus_per_actor=1, decode_cpus=0.25, actor_start_timeout_s=5)
    with pytest.raises(ConfigError, match="did not all start within 5 s"):
        score_cases(
            checkpoint, cases, tmp_path / "x.jsonl", options=ONE_THREAD, engine_cfg=CFG, batch=too_many
        )
