"""The TensorRT runtime's CPU-side logic: chunking, padding, build checks, folder choice,
and that engines are hash-checked and version-checked before TensorRT sees them.

A stand-in ``tensorrt`` module (only ``__version__``) lets ``open_runtime`` run up to
the point where a GPU would be needed.
"""

from __future__ import annotations

import json
import shutil
import sys
import types

import numpy as np
import pytest

from drifa_edge.errors import ArtifactError, UnsupportedBackendError
from drifa_edge.runtimes import tensorrt as trt_rt
from drifa_edge.runtimes.base import RuntimeOptions

# ---------------------------------------------------------------- chunking


@pytest.mark.parametrize("rows", [0, 1, 5, 29, 30, 31, 59, 60, 61, 241])
@pytest.mark.parametrize("rmin, rmax", [(1, 30), (1, 60), (30, 30), (4, 16)])
def test_plan_chunks_covers_every_row_once_within_the_profile(rows, rmin, rmax):
    plan = trt_rt.plan_chunks(rows, rmin, rmax)
    covered = [r for start, stop, _ in plan for r in range(start, stop)]
    assert covered == list(range(rows))
    for start, stop, padded in plan:
        assert rmin <= padded <= rmax
        assert stop - start <= padded
        assert padded == max(stop - start, rmin)  # pad only when below the minimum
    assert len(plan) == -(-rows // rmax)


def test_plan_chunks_rejects_an_empty_range():
    with pytest.raises(ValueError):
        trt_rt.plan_chunks(5, 4, 3)


def test_pad_rows_repeats_the_last_row():
    a = np.arange(6, dtype=np.float32).reshape(3, 2)
    padded = trt_rt.pad_rows(a, 5)
    assert padded.shape == (5, 2)
    np.testing.assert_array_equal(padded[:3], a)
    np.testing.assert_array_equal(padded[3:], np.repeat(a[-1:], 2, axis=0))
    assert trt_rt.pad_rows(a, 2) is a


# ---------------------------------------------------------------- build.json vs this machine

BUILD = {
    "tensorrt": "10.3.0",
    "target": "jetson-orin",
    "gpu": {"index": 0, "name": "Orin", "compute_capability": "8.7"},
}


def test_check_build_accepts_the_same_machine():
    trt_rt.check_build(BUILD, "10.3.0", {"name": "Orin", "compute_capability": "8.7"})


def test_check_build_refuses_another_tensorrt_version():
    with pytest.raises(ArtifactError, match=r"TensorRT 10\.3\.0.*10\.7\.0.*--target jetson-orin"):
        trt_rt.check_build(BUILD, "10.7.0", {"name": "Orin", "compute_capability": "8.7"})


def test_check_build_refuses_another_architecture():
    with pytest.raises(ArtifactError, match="compute capability 8.7.*compute capability 8.9"):
        trt_rt.check_build(BUILD, "10.3.0", {"name": "NVIDIA L4", "compute_capability": "8.9"})


def test_check_build_refuses_another_gpu_model_unless_allowed(caplog):
    same_arch = {"name": "NVIDIA A10", "compute_capability": "8.7"}
    with pytest.raises(ArtifactError, match="allow_other_gpu"):
        trt_rt.check_build(BUILD, "10.3.0", same_arch)
    trt_rt.check_build(BUILD, "10.3.0", same_arch, allow_other_gpu=True)
    assert "run on NVIDIA A10" in caplog.text


@pytest.mark.parametrize("device, index", [(None, 0), ("cuda", 0), ("cuda:1", 1), ("GPU", 0)])
def test_device_index(device, index):
    assert trt_rt._device_index(device) == index


def test_device_index_refuses_a_cpu():
    with pytest.raises(UnsupportedBackendError, match="cuda:N"):
        trt_rt._device_index("cpu")


# ---------------------------------------------------------------- which engine folder


def _fake_build(export_dir, target, precision, build=None):
    folder = export_dir / f"tensorrt-{target}-{precision}"
    folder.mkdir(parents=True)
    (folder / "build.json").write_text(json.dumps(build or {"precision": precision}))
    return folder


def test_find_engine_folder(tmp_path):
    with pytest.raises(ArtifactError, match="no TensorRT fp16 engines.*--trt --fp16"):
        trt_rt.find_engine_folder(tmp_path, "fp16")
    desktop = _fake_build(tmp_path, "desktop-cuda", "fp16")
    assert trt_rt.find_engine_folder(tmp_path, "fp16") == (tmp_path, desktop)
    assert trt_rt.find_engine_folder(desktop, "fp16") == (tmp_path, desktop)  # the engine folder itself
    jetson = _fake_build(tmp_path, "jetson-orin", "fp16")
    with pytest.raises(ArtifactError, match="several TensorRT fp16 builds"):
        trt_rt.find_engine_folder(tmp_path, "fp16")
    assert trt_rt.find_engine_folder(tmp_path, "fp16", "jetson-orin") == (tmp_path, jetson)
    with pytest.raises(ArtifactError, match="available builds"):
        trt_rt.find_engine_folder(tmp_path, "int8", "jetson-orin")


# ---------------------------------------------------------------- open_runtime up to the GPU


@pytest.fixture
def fake_tensorrt(monkeypatch):
    module = types.ModuleType("tensorrt")
    module.__version__ = "10.3.0"
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    return module


@pytest.fixture
def engine_export(tiny_export, tmp_path):
    """A copy of the tiny export with a fake (hashed) jetson-orin fp16 build."""
    from drifa_edge.artifact import layout

    out = tmp_path / "out"
    shutil.copytree(tiny_export, out)
    build = {**BUILD, "precision": "fp16", "masks": "graph", "profile": {"dla_core": -1}}
    folder = _fake_build(out, "jetson-orin", "fp16", build)
    for name in ("prefix.engine", "suffix.engine"):
        (folder / name).write_bytes(b"not a real engine " + name.encode())
    rel = [f"{folder.name}/{f}" for f in ("prefix.engine", "suffix.engine", "build.json")]
    layout.update_card(out, {"tensorrt": {folder.name: {"precision": "fp16"}}}, hash_files=rel)
    return out, folder


def test_a_tampered_engine_is_refused_before_deserializing(fake_tensorrt, engine_export):
    out, folder = engine_export
    with open(folder / "suffix.engine", "ab") as f:
        f.write(b"!")
    with pytest.raises(ArtifactError, match="suffix.engine: sha256"):
        trt_rt.open_runtime(out, RuntimeOptions(precision="fp16"))


def test_an_unlisted_engine_is_refused(fake_tensorrt, engine_export, tmp_path):
    out, folder = engine_export
    other = _fake_build(out, "desktop-cuda", "int8", {"precision": "int8"})
    for name in ("prefix.engine", "suffix.engine"):
        (other / name).write_bytes(b"x")
    with pytest.raises(ArtifactError, match="not listed in"):
        trt_rt.open_runtime(out, RuntimeOptions(precision="int8"))


class _FakeCuda:
    def __init__(self, info):
        self.info = info

    def device_count(self):
        return 1

    def device_info(self, index):
        return self.info


@pytest.mark.parametrize(
    "trt_version, gpu, message",
    [
        ("10.7.0", {"name": "Orin", "compute_capability": "8.7"}, "built with TensorRT 10.3.0"),
        ("10.3.0", {"name": "NVIDIA L4", "compute_capability": "8.9"}, "built for Orin"),
    ],
)
def test_open_runtime_refuses_a_build_for_another_machine(
    fake_tensorrt, engine_export, monkeypatch, trt_version, gpu, message
):
    out, _ = engine_export
    fake_tensorrt.__version__ = trt_version
    monkeypatch.setattr(trt_rt, "_cuda", lambda: _FakeCuda(gpu))
    with pytest.raises(ArtifactError, match=message):
        trt_rt.open_runtime(out, RuntimeOptions(precision="fp16"))


def test_open_runtime_refuses_an_old_tensorrt(fake_tensorrt, engine_export):
    from drifa_edge.errors import MissingDependencyError

    fake_tensorrt.__version__ = "8.6.1"
    with pytest.raises(MissingDependencyError, match="TensorRT >= 10"):
        trt_rt.open_runtime(engine_export[0], RuntimeOptions(precision="fp16"))
