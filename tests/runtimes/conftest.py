"""One tiny exported model shared by the runtime tests (exported once per session;
tests/export/conftest.py builds the same model for the export tests)."""

from __future__ import annotations

from pathlib import Path

import pytest

TASKS = (("derm", ("nevus", "melanoma", "keratosis"), 3), ("xray", ("normal", "pneumonia"), 1))


def build_tiny_checkpoint(folder: Path, seed: int = 0, dropout: float = 0.25) -> Path:
    """Width 0.125, 32 px, two tasks (RGB with 3 classes, gray with 2), random weights.

    BatchNorm running statistics are randomized so the eval-mode graph is not trivial."""
    torch = pytest.importorskip("torch")
    from drifa_edge.artifact.card import default_card
    from drifa_edge.artifact.checkpoint import save_checkpoint
    from drifa_edge.model.config import ModelConfig, TaskSpec
    from drifa_edge.model.drifa import build_model

    torch.manual_seed(seed)
    cfg = ModelConfig(
        tasks=tuple(TaskSpec(n, c, ch) for n, c, ch in TASKS), image_size=32, width=0.125, dropout=dropout
    )
    model = build_model(cfg)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    save_checkpoint(model.eval(), default_card(cfg, temperature={"derm": 1.5}), folder)
    return folder


@pytest.fixture(scope="session")
def tiny_artifacts(tmp_path_factory) -> tuple[Path, Path]:
    """(checkpoint folder, export folder with ONNX and OpenVINO graphs, checks skipped)."""
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from drifa_edge.export.onnx import export_onnx

    root = tmp_path_factory.mktemp("tiny")
    checkpoint = build_tiny_checkpoint(root / "checkpoint")
    out = root / "export"
    export_onnx(checkpoint, out, check=False)
    try:
        import openvino  # noqa: F401
    except ImportError:
        return checkpoint, out
    from drifa_edge.export.openvino import export_openvino

    export_openvino(out, check=False)
    return checkpoint, out
