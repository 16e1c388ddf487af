"""Thread and wait policies (drifa_edge.runtimes.threads): the default from the load, --threads,
and that each runtime really gets them (session options, compiled-model properties, torch)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from drifa_edge.errors import ConfigError
from drifa_edge.runtimes import threads
from drifa_edge.runtimes.base import RuntimeOptions, open_runtime


@pytest.mark.parametrize(
    "cpus, busy, expected",
    [
        (2, 0.0, 2),
        (2, 0.5, 2),
        (2, 0.75, 1),
        (2, 1.0, 1),
        (2, 2.0, 1),
        (8, 2.9, 5),
        (8, 0.69, 8),
        (1, 1.0, 1),
    ],
)
def test_threads_from_load(cpus, busy, expected):
    assert threads.threads_from_load(cpus, busy) == expected


def _stat(busy: int, idle: int) -> str:
    # cpu user nice system idle iowait irq softirq steal guest guest_nice
    return f"cpu  {busy} 0 0 {idle} 0 0 0 0 0 0\ncpu0 1 0 0 1 0 0 0 0 0 0\n"


def test_busy_cores_from_proc_stat(tmp_path, monkeypatch):
    stat = tmp_path / "stat"
    samples = iter([_stat(1000, 1000), _stat(1150, 1050)])  # 150 busy of 200 jiffies: 75 %
    monkeypatch.setattr(threads.time, "sleep", lambda s: stat.write_text(next(samples)))
    stat.write_text(next(samples))
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 4)
    assert threads.busy_cores(stat=stat) == pytest.approx(3.0)
    assert threads.busy_cores(stat=tmp_path / "missing") == 0.0


def test_requested_threads_env():
    assert threads.requested_threads({}) is None
    assert threads.requested_threads({threads.THREADS_ENV: "3"}) == 3
    for bad in ("0", "-1", "two"):
        with pytest.raises(ConfigError, match=threads.THREADS_ENV):
            threads.requested_threads({threads.THREADS_ENV: bad})


def test_use_threads_sets_the_process_default(monkeypatch):
    monkeypatch.delenv(threads.THREADS_ENV, raising=False)
    threads.use_threads(None)
    assert threads.THREADS_ENV not in os.environ
    threads.use_threads(3)
    assert os.environ[threads.THREADS_ENV] == "3" and threads.default_threads() == 3
    with pytest.raises(ConfigError):
        threads.use_threads(0)


def test_wait_policy_keeps_what_the_user_set():
    env = {"KMP_BLOCKTIME": "200", "PATH": "/bin"}
    threads.apply_wait_policy(env)
    assert env["OMP_WAIT_POLICY"] == "PASSIVE" and env["KMP_BLOCKTIME"] == "200"
    threads.apply_wait_policy(env)  # twice: still only what it added is marked as its own
    # the authors' baseline in bench runs with OpenMP's defaults, the user's settings kept
    assert threads.baseline_env(env) == {"KMP_BLOCKTIME": "200", "PATH": "/bin"}


def test_cli_sets_passive_waiting_before_torch_is_imported(tmp_path):
    """A fresh `drifa-edge` process: OMP_WAIT_POLICY is PASSIVE by the time torch is imported."""
    script = (
        "import os, sys\n"
        "import drifa_edge.cli as cli\n"
        "assert 'torch' not in sys.modules, 'the CLI imported torch at start'\n"
        "sys.argv = ['drifa-edge', 'info', '--json']\n"
        "try:\n    cli.main()\nexcept SystemExit:\n    pass\n"
        "import torch\n"
        "print('POLICY', os.environ.get('OMP_WAIT_POLICY'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "KMP_BLOCKTIME")}
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "POLICY PASSIVE" in proc.stdout


def test_runtime_options_refuse_zero_threads():
    from drifa_edge.errors import UnsupportedBackendError

    with pytest.raises(UnsupportedBackendError, match="threads"):
        RuntimeOptions(threads=0)


def test_open_runtime_fills_threads_from_the_default(tiny_artifacts, monkeypatch):
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv(threads.THREADS_ENV, "1")
    rt = open_runtime("onnxruntime", tiny_artifacts[1], RuntimeOptions(device="cpu"))
    try:
        assert rt._session_options.intra_op_num_threads == 1
    finally:
        rt.close()


def test_onnxruntime_sessions_do_not_spin(tiny_artifacts):
    pytest.importorskip("onnxruntime")
    rt = open_runtime("onnxruntime", tiny_artifacts[1], RuntimeOptions(device="cpu", threads=2))
    try:
        so = rt._session_options
        assert so.intra_op_num_threads == 2
        assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
        assert so.get_session_config_entry("session.inter_op.allow_spinning") == "0"
    finally:
        rt.close()


def test_openvino_compiled_models_unpinned_with_the_threads(tiny_artifacts):
    pytest.importorskip("openvino")
    import numpy as np

    rt = open_runtime("openvino", tiny_artifacts[1], RuntimeOptions(threads=2, streams=2))
    try:
        compiled, _ = rt._prefix
        assert compiled.get_property("ENABLE_CPU_PINNING") is False
        assert int(compiled.get_property("INFERENCE_NUM_THREADS")) == 2
        size = rt.card.model.image_size
        feats = rt.run_prefix(
            [np.zeros((1, t.channels, size, size), np.float32) for t in rt.card.model.tasks]
        )
        rt.run_suffix([np.repeat(f, 4, axis=0) for f in feats])  # 4 rows over 2 streams
        ((suffix, _),) = rt._parts.values()
        assert suffix.get_property("ENABLE_CPU_PINNING") is False
        assert int(suffix.get_property("NUM_STREAMS")) == 2
    finally:
        rt.close()


def test_torch_runtime_sets_its_threads(tiny_artifacts, monkeypatch):
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv(threads.THREADS_ENV, "1")
        open_runtime("torch", tiny_artifacts[0]).close()
        assert torch.get_num_threads() == 1
        open_runtime("torch", tiny_artifacts[0], RuntimeOptions(threads=2)).close()
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_call_threads_follow_what_others_use(tmp_path, monkeypatch):
    """Per-call threads (torch): others' busy time = system busy - this process's CPU time."""
    stat = tmp_path / "stat"
    stat.write_text(_stat(0, 0))
    clock = {"wall": 0.0, "own": 0.0}
    monkeypatch.setattr(threads.time, "monotonic", lambda: clock["wall"])
    monkeypatch.setattr(threads.time, "process_time", lambda: clock["own"])
    tick = float(os.sysconf("SC_CLK_TCK"))
    calls = threads.CallThreads(cpus=2, stat=stat)

    def after(wall: float, own: float, system_busy: float) -> int:
        clock["wall"] += wall
        clock["own"] += own
        busy, idle = (float(v) for v in stat.read_text().split()[1:5:3])
        stat.write_text(_stat(int(busy + system_busy * tick), int(idle)))
        return calls.threads()

    assert after(1.0, own=1.8, system_busy=1.8) == 2  # only this process worked: both CPUs
    assert after(1.0, own=1.0, system_busy=1.95) == 1  # another process held ~a core
    assert after(0.05, own=0.0, system_busy=0.0) == 1  # too short to measure: keeps the choice
    assert after(1.0, own=1.9, system_busy=1.9) == 2  # the other process is gone
    missing = threads.CallThreads(cpus=3, stat=tmp_path / "none")
    assert missing.threads() == 3


def test_torch_runtime_adapts_only_without_threads(tiny_artifacts, monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.delenv(threads.THREADS_ENV, raising=False)
    adaptive = open_runtime("torch", tiny_artifacts[0])
    fixed = open_runtime("torch", tiny_artifacts[0], RuntimeOptions(threads=1))
    try:
        assert adaptive._call_threads is not None and fixed._call_threads is None
    finally:
        adaptive.close()
        fixed.close()
