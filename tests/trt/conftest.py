"""A tiny exported DRIFA-Net (two tasks, one grayscale, 32 px, width 0.125) for the TensorRT tests.

The ONNX graphs come from the project's own exporter (``export_onnx``), so the Q/DQ
tests see exactly the graphs a TensorRT build would get. ``check=False``: the export
checks have their own tests.
"""

from __future__ import annotations

from pathlib import Path

import pytest

TASKS = (("derm", ("nevus", "melanoma", "other"), 3), ("xray", ("normal", "pneumonia"), 1))


@pytest.fixture(scope="session")
def tiny_export(tiny_checkpoint_factory, tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from drifa_edge.export.onnx import export_onnx

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("trt")
    tiny_checkpoint_factory(root / "ckpt", TASKS)
    export_onnx(root / "ckpt", root / "out", check=False)
    return root / "out"


@pytest.fixture
def images():
    """Standard-normal images for the tiny export, (n, C, 32, 32) per task."""
    import numpy as np

    def make(n: int, seed: int = 0) -> list:
        rng = np.random.default_rng(seed)
        return [
            rng.standard_normal((n, 3, 32, 32), dtype=np.float32),
            rng.standard_normal((n, 1, 32, 32), dtype=np.float32),
        ]

    return make
