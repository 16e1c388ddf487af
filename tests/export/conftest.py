"""A tiny checkpoint and its checked export (ONNX + OpenVINO), built once per session.

(tests/runtimes/conftest.py builds the same tiny model for the conformance suite; the
two folders keep their own fixtures because pytest shares fixtures only downwards.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

TASKS = (("derm", ("nevus", "melanoma", "keratosis"), 3), ("xray", ("normal", "pneumonia"), 1))


def build_tiny_checkpoint(folder: Path, seed: int = 0, dropout: float = 0.25) -> Path:
    """Width 0.125, 32 px, an RGB task with 3 classes and a gray one with 2; random
    weights and BatchNorm statistics (so eval-mode BatchNorm is not the identity)."""
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


@pytest.fixture
def checkpoint_builder():
    """``build_tiny_checkpoint`` for tests that need a variant (other seed, dropout rate)."""
    return build_tiny_checkpoint


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "checkpoint")


@pytest.fixture(scope="session")
def checked_export(tiny_checkpoint, tmp_path_factory):
    """``export_all`` with every check on (ONNX Runtime and OpenVINO): (checkpoint, out, result)."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    from drifa_edge.export import export_all
    from drifa_edge.export.checks import CheckConfig

    out = tmp_path_factory.mktemp("export") / "out"
    result = export_all(tiny_checkpoint, out, openvino=True, check_config=CheckConfig(cases=4, samples=200))
    return tiny_checkpoint, out, result
