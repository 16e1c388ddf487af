"""A tiny exported DRIFA-Net (two tasks, one grayscale, 32 px, width 0.125) for the TensorRT tests.

The ONNX graphs come from the project's own exporter (``export_onnx``), so the Q/DQ
tests see exactly the graphs a TensorRT build would get. ``check=False``: the export
checks have their own tests.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from drifa_edge.artifact.card import default_card
    from drifa_edge.artifact.checkpoint import save_checkpoint
    from drifa_edge.export.onnx import export_onnx
    from drifa_edge.model.config import ModelConfig, TaskSpec
    from drifa_edge.model.drifa import build_model

    cfg = ModelConfig(
        tasks=(
            TaskSpec("derm", ("nevus", "melanoma", "other")),
            TaskSpec("xray", ("normal", "pneumonia"), 1),
        ),
        image_size=32,
        width=0.125,
    )
    torch.manual_seed(0)
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("trt")
    save_checkpoint(build_model(cfg).eval(), default_card(cfg), root / "ckpt")
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
