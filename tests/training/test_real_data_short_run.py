"""Issue 12's failure on the real data: a short run at the paper's BatchNorm momentum.

Before the BatchNorm recomputation, 4 epochs on skin_isic9 + blood_pbc8 (32 px, width
0.25, momentum 0.01) left validation and test at the majority-class rate. Slow (a few
minutes on 2 busy cores) and needs ../shared/data.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.slow, pytest.mark.realdata]


def test_short_run_at_paper_momentum_beats_the_majority_class(shared_data, tmp_path):
    from drifa_edge.artifact.card import read_card
    from drifa_edge.data.sources import load_datasets
    from drifa_edge.training.config import TrainConfig
    from drifa_edge.training.loop import train

    cfg = TrainConfig(
        epochs=4, image_size=32, width=0.25, bn_momentum=0.01, threads=1, mc_samples=4, precision="fp32"
    )
    sets = load_datasets(
        [f"skin={shared_data / 'skin_isic9'}", f"blood={shared_data / 'blood_pbc8'}"], seed=cfg.seed
    )
    card = read_card(train(sets, cfg, tmp_path / "run", progress=False))
    assert card.training["chance"]["at_chance"] == []
    for task, counts in card.training["class_counts"]["test"].items():
        majority = max(counts) / sum(counts)
        assert card.metrics["test"][task]["accuracy"] > majority, (task, majority)
        assert card.metrics["test"][task]["balanced_accuracy"] > 1 / len(counts)
    assert np.isfinite(card.training["best_val_loss"])
    # the val split carved from skin_isic9's unbalanced train split is stratified: 15 % of each class
    counts = card.training["class_counts"]
    train, val = np.array(counts["train"]["skin"]), np.array(counts["val"]["skin"])
    np.testing.assert_allclose(val, 0.15 / 0.85 * train, atol=1.0)
