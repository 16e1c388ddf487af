"""--class-balance: class-weighted loss and the class-balanced sampler (training.data)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from drifa_edge.data.synthetic import make_synthetic
from drifa_edge.errors import ConfigError
from drifa_edge.training.config import TrainConfig
from drifa_edge.training.data import prepare_data

BASE = TrainConfig(image_size=32, width=0.125, batch_size=16, seed=0)


@pytest.fixture(scope="module")
def unbalanced():
    """The synthetic set with most training images of classes 1 and 2 of each task dropped."""
    sets = make_synthetic(n_per_class=40, size=32, seed=0)
    out = {}
    for name, s in sets.items():
        kept, seen = [], {}
        for x in s.samples:
            if x.split == "train":
                seen[x.label] = seen.get(x.label, 0) + 1
                if seen[x.label] > {0: 100, 1: 12, 2: 4}[x.label]:
                    continue
            kept.append(x)
        out[name] = s._with_samples(kept)
    return out


def test_weights_are_sklearns_balanced_weights(unbalanced):
    from sklearn.utils.class_weight import compute_class_weight

    data = prepare_data(unbalanced, BASE.replace(class_balance="weights"))
    for name, w in data.class_weights().items():
        y = data.tasks[name].splits["train"].y
        expected = compute_class_weight("balanced", classes=np.unique(y), y=y)
        np.testing.assert_allclose(w, expected, rtol=1e-6)
    assert all(w is None for w in prepare_data(unbalanced, BASE).class_weights().values())


def test_sampler_draws_every_class_about_equally(unbalanced):
    data = prepare_data(unbalanced, BASE.replace(class_balance="sampler"))
    plain = prepare_data(unbalanced, BASE)
    for name, task in data.tasks.items():
        y = task.splits["train"].y
        drawn = np.concatenate([y[[r[name] for r in data.train_pairs(e)]] for e in range(20)])
        shares = np.bincount(drawn, minlength=3) / drawn.size
        np.testing.assert_allclose(shares, 1 / 3, atol=0.04)
        natural = np.bincount(y[[r[name] for r in plain.train_pairs(0)]], minlength=3) / len(
            plain.train_pairs(0)
        )
        assert natural[0] > 0.6  # without the sampler the majority class dominates
    assert data.train_pairs(3) == data.train_pairs(3)  # seeded per epoch
    assert len(data.train_pairs(0)) == len(plain.train_pairs(0))


def test_sampler_with_case_id_pairing_is_refused():
    with pytest.raises(ConfigError, match="case_id"):
        TrainConfig(class_balance="sampler", pairing="case_id")


def test_unknown_class_balance_suggests_a_name():
    with pytest.raises(ConfigError, match="weights"):
        TrainConfig(class_balance="weight")


def test_the_card_records_the_class_balance(unbalanced, tmp_path):
    """~6 s: one epoch of a tiny model with class weights."""
    pytest.importorskip("torch")
    from drifa_edge.artifact.card import read_card
    from drifa_edge.training.loop import train

    cfg = BASE.replace(
        class_balance="weights", epochs=1, mc_samples=2, threads=1, precision="fp32", bn_momentum=0.1
    )
    card = read_card(train(unbalanced, cfg, tmp_path / "w", progress=False))
    assert card.training["class_balance"] == "weights"
    assert card.training["config"]["class_balance"] == "weights"
    counts = card.training["class_counts"]["train"]["derm"]
    weights = card.training["class_weights"]["derm"]
    assert counts == [28, 12, 4]  # 70 % of 40 for class 0, the others capped at 12 and 4
    assert weights == pytest.approx([44 / (3 * 28), 44 / (3 * 12), 44 / (3 * 4)], rel=1e-5)
    assert dataclasses.asdict(cfg)["class_balance"] == "weights"
