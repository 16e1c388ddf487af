"""Without TensorRT (this project's machines): clear errors, lazy imports, an honest probe."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from drifa_edge.errors import MissingDependencyError

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("tensorrt") is not None,
    reason="TensorRT is installed here; these test its absence",
)


def test_import_tensorrt_names_the_extra_and_the_gpu():
    from drifa_edge.export.tensorrt import import_tensorrt

    with pytest.raises(MissingDependencyError) as e:
        import_tensorrt()
    message = str(e.value)
    assert "pip install 'drifa-edge[tensorrt]'" in message
    assert "NVIDIA GPU" in message and "pypi.nvidia.com" in message


def test_build_engine_needs_tensorrt(tmp_path):
    from drifa_edge.export.tensorrt import build_engine, load_profile

    with pytest.raises(MissingDependencyError, match=r"drifa-edge\[tensorrt\]"):
        build_engine(tmp_path / "g.onnx", tmp_path / "g.engine", load_profile("desktop-cuda"), "fp16", {})


def test_export_tensorrt_fails_before_touching_the_folder(tmp_path):
    """No TensorRT: the error comes first, even for a folder that does not exist."""
    from drifa_edge.export.tensorrt import export_tensorrt

    missing = tmp_path / "nowhere"
    with pytest.raises(MissingDependencyError, match=r"drifa-edge\[tensorrt\]"):
        export_tensorrt(missing, "jetson-orin", "int8")
    assert not missing.exists()


def test_probe_says_not_installed():
    from drifa_edge.runtimes.base import probe_runtime
    from drifa_edge.runtimes.tensorrt import probe

    for result in (probe(), probe_runtime("tensorrt")):
        assert result["available"] is False
        assert "TensorRT not installed" in result["reason"]


def test_open_runtime_needs_tensorrt(tiny_export):
    from drifa_edge.runtimes.base import RuntimeOptions, open_runtime

    with pytest.raises(MissingDependencyError, match=r"drifa-edge\[tensorrt\]"):
        open_runtime("tensorrt", tiny_export, RuntimeOptions(precision="fp16"))


def test_modules_import_without_heavy_dependencies():
    """The TensorRT modules import with numpy only: no tensorrt, torch, onnx, onnxruntime."""
    code = (
        "import sys\n"
        "import drifa_edge.export.tensorrt, drifa_edge.export.tensorrt_prepare, drifa_edge.runtimes.tensorrt\n"
        "import drifa_edge.quantize.tensorrt_qdq, drifa_edge.quantize.mixed_precision\n"
        "heavy = [m for m in ('tensorrt', 'torch', 'onnx', 'onnxruntime', 'cuda', 'modelopt') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
