"""A tiny DRIFA-Net checkpoint (width 0.125, 32 px) shared by the bench tests.

Its tasks are those of the built-in synthetic data (``--data synthetic``), so the
accuracy / calibration / drift-gate path runs without files."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch = pytest.importorskip("torch")
    from drifa_edge.artifact.card import default_card
    from drifa_edge.artifact.checkpoint import save_checkpoint
    from drifa_edge.model.config import ModelConfig, TaskSpec
    from drifa_edge.model.drifa import build_model

    cfg = ModelConfig(
        tasks=(
            TaskSpec("derm", ("blob", "ring", "cross")),
            TaskSpec("scan", ("stripes", "checker", "spots"), 1),
        ),
        image_size=32,
        width=0.125,
    )
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("bench") / "ckpt"
    save_checkpoint(build_model(cfg), default_card(cfg), folder)
    return folder


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker subprocesses inherit this: tests share a small machine."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
