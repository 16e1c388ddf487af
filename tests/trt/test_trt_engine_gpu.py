"""Engine build and runtime on a real NVIDIA GPU with TensorRT >= 10.

Skipped wherever TensorRT or a CUDA device is missing, which includes every machine
of this project so far: none of these tests has run yet. Run them on a GPU host with
``pytest -m "trt and gpu" tests/trt``.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from drifa_edge.export.tensorrt import TensorRTProfile


def _gpu_ready() -> str | None:
    """None when TensorRT and a CUDA device are usable, else the reason to skip."""
    from drifa_edge.runtimes.tensorrt import probe

    result = probe()
    return None if result.get("available") else result.get("reason", "TensorRT unavailable")


_reason = _gpu_ready()
pytestmark = [
    pytest.mark.trt,
    pytest.mark.gpu,
    pytest.mark.skipif(_reason is not None, reason=f"needs TensorRT >= 10 and an NVIDIA GPU: {_reason}"),
]

SMALL = TensorRTProfile(target="ci-gpu", rows_min=1, rows_opt=8, rows_max=16, workspace_mb=512)


@pytest.fixture
def export_copy(tiny_export, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(tiny_export, out)
    return out


def _open(name, path, precision="fp32", **extra):
    from drifa_edge.runtimes.base import RuntimeOptions, open_runtime

    return open_runtime(name, path, RuntimeOptions(precision=precision, extra=extra))


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_build_open_and_run(export_copy, images, precision):
    from drifa_edge.export.tensorrt import export_tensorrt
    from drifa_edge.inference.engine import EngineConfig, run_mc

    summary = export_tensorrt(export_copy, SMALL, precision, samples=4)  # runs check_engines
    assert all(c["passed"] for c in summary["checks"])
    rt = _open("tensorrt", export_copy, precision)
    try:
        assert rt.seedable is False and rt.precision == precision
        x = images(5)
        probs = run_mc([rt], x, EngineConfig(samples=7, max_rows=20))  # 35 rows: chunked at 16
        for task, p in probs.items():
            assert p.shape[:2] == (5, 7)
            np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)
            assert p.std(axis=1).max() > 0, f"{task}: MC samples must differ"
    finally:
        rt.close()


def test_host_masks_match_onnxruntime_under_the_same_uniforms(export_copy, images):
    from drifa_edge.export import checks
    from drifa_edge.export.tensorrt import export_tensorrt

    export_tensorrt(export_copy, SMALL, "fp32", masks="host", samples=4)
    rt = _open("tensorrt", export_copy, "fp32")
    ref = _open("onnxruntime", export_copy, "fp32")
    try:
        assert rt.seedable
        x = images(3)
        uniforms = checks.random_uniforms(ref, 3, seed=1)
        got = rt.run_suffix(rt.run_prefix(x), uniforms)
        want = ref.run_suffix(ref.run_prefix(x), uniforms)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-3, atol=1e-4)
        rt.reseed(5)
        a = rt.run_suffix(rt.run_prefix(x))
        rt.reseed(5)
        np.testing.assert_array_equal(a[0], rt.run_suffix(rt.run_prefix(x))[0])
    finally:
        rt.close()
        ref.close()


def test_int8_build_from_calibration_images(export_copy, images):
    from drifa_edge.export.tensorrt import export_tensorrt

    calib = images(40, seed=3)
    summary = export_tensorrt(export_copy, SMALL, "int8", calib_values=calib, subset=32, samples=4)
    assert any(f.endswith("suffix.qdq.onnx") for f in summary["files"])
    rt = _open("tensorrt", export_copy, "int8")
    try:
        logits = rt.run_suffix(rt.run_prefix(images(2)))
        assert all(np.isfinite(z).all() for z in logits)
    finally:
        rt.close()
