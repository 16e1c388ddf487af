"""The one tiny DRIFA-Net of the test suite (width 0.125, 32 px, random weights), built by
every test folder through the ``tiny_checkpoint_factory`` fixture of tests/conftest.py
(plain helpers such as tests/inference/inference_helpers.py import it directly)."""

from __future__ import annotations

from pathlib import Path

import pytest


def make_tiny_checkpoint(
    folder: Path,
    tasks: tuple[tuple[str, tuple[str, ...], int], ...],
    *,
    seed: int = 0,
    dropout: float = 0.25,
    randomize_bn: bool = False,
    head_scale: float | None = None,
    **card: object,
) -> Path:
    """Save a tiny DRIFA-Net checkpoint into ``folder`` and return it.

    ``tasks``: (name, classes, channels) per modality. ``randomize_bn`` draws BatchNorm
    running statistics (so eval-mode BatchNorm is not the identity); ``head_scale``
    multiplies the heads' weights (spreads cases and samples visibly); ``card`` goes to
    ``default_card`` (temperature, referral, ...)."""
    torch = pytest.importorskip("torch")
    from drifa_edge.artifact.card import default_card
    from drifa_edge.artifact.checkpoint import save_checkpoint
    from drifa_edge.model.config import ModelConfig, TaskSpec
    from drifa_edge.model.drifa import build_model

    cfg = ModelConfig(
        tasks=tuple(TaskSpec(name, classes, channels) for name, classes, channels in tasks),
        image_size=32,
        width=0.125,
        dropout=dropout,
    )
    torch.manual_seed(seed)
    model = build_model(cfg)
    with torch.no_grad():
        if randomize_bn:
            for m in model.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.2, 0.2)
                    m.running_var.uniform_(0.5, 1.5)
        if head_scale is not None:
            for head in model.heads:
                head.weight.mul_(head_scale)
    save_checkpoint(model.eval(), default_card(cfg, **card), folder)
    return folder
