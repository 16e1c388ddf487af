"""The chance detector (training.chance): unit checks and the acceptance pair of issue 12
(fires on a model trained on shuffled labels, silent on one that learned)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from drifa_edge.errors import BadInputError
from drifa_edge.training.chance import chance_test

pytest.importorskip("scipy")


def _binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k), X ~ Binomial(n, p), summed by hand (independent of scipy)."""
    return sum(math.comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(k, n + 1))


def test_constant_majority_prediction_is_at_chance():
    y = np.array([0] * 12 + [1] * 5 + [2] * 3)
    t = chance_test(y, np.zeros_like(y), 3)
    assert t.accuracy == t.majority_rate == 0.6
    assert t.balanced_accuracy == pytest.approx(1 / 3)
    assert t.p_balanced_accuracy == 1.0  # every permutation scores 1/3 exactly
    assert t.at_chance


def test_binomial_p_value_matches_a_hand_sum():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 40)
    pred = np.where(rng.random(40) < 0.5, y, (y + 1) % 4)
    t = chance_test(y, pred, 4)
    k = int((y == pred).sum())
    majority = np.bincount(y).max() / y.size
    assert t.p_accuracy == pytest.approx(_binomial_tail(k, y.size, majority), rel=1e-9)


def test_a_small_perfect_validation_set_is_not_at_chance():
    """Six cases, all right: the exact test still shows it learned (0.5^6 = 0.016 < 0.025)."""
    y = np.array([0, 1, 0, 1, 0, 1])
    t = chance_test(y, y.copy(), 2)
    assert t.p_accuracy == pytest.approx(0.5**6)
    assert not t.at_chance


def test_random_predictions_are_at_chance_for_most_seeds():
    rng = np.random.default_rng(1)
    flagged = [
        chance_test(rng.integers(0, 3, 60), rng.integers(0, 3, 60), 3, seed=s).at_chance for s in range(40)
    ]
    assert sum(flagged) >= 35  # family-wise level 0.05: about 2 of 40 may reject by luck


def test_bad_input_is_refused():
    with pytest.raises(BadInputError, match="equal"):
        chance_test(np.array([0, 1]), np.array([0]), 2)
    with pytest.raises(BadInputError, match=r"\[0, 2\)"):
        chance_test(np.array([0, 2]), np.array([0, 1]), 2)


# ----------------------------------------------------------------- trained models (~15 s)

torch = pytest.importorskip("torch")

from drifa_edge.artifact.card import read_card  # noqa: E402
from drifa_edge.data.synthetic import make_synthetic  # noqa: E402
from drifa_edge.training.config import TrainConfig  # noqa: E402
from drifa_edge.training.loop import train  # noqa: E402

RUN = TrainConfig(
    epochs=4,
    batch_size=16,
    lr=3e-3,
    image_size=32,
    width=0.125,
    early_stopping_patience=None,
    mc_samples=4,
    threads=1,
    precision="fp32",
)


def shuffled(sets: dict, seed: int = 0) -> dict:
    """The same images with every label permuted at random (within each task)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, s in sets.items():
        labels = rng.permutation([x.label for x in s.samples])
        samples = [dataclasses.replace(x, label=int(y)) for x, y in zip(s.samples, labels, strict=True)]
        out[name] = s._with_samples(samples)
    return out


@pytest.fixture(scope="module")
def learned_and_shuffled(tmp_path_factory):
    sets = make_synthetic(n_per_class=60, size=32, seed=0)
    root = tmp_path_factory.mktemp("chance")
    learned = train(sets, RUN, root / "learned", progress=False)
    noise = train(shuffled(sets), RUN, root / "shuffled", progress=False)
    return learned, noise


def test_fires_on_shuffled_labels_and_stays_silent_on_a_model_that_learned(learned_and_shuffled):
    learned, noise = (read_card(p) for p in learned_and_shuffled)
    assert learned.training["chance"]["at_chance"] == []
    assert noise.training["chance"]["at_chance"] == list(noise.task_names)
    for task, t in noise.training["chance"]["tasks"].items():
        assert t["p_accuracy"] >= 0.025 and t["p_balanced_accuracy"] >= 0.025
        assert t["cases"] == noise.metrics["val"][task]["cases"]


def test_export_refuses_a_model_at_chance_unless_forced(learned_and_shuffled, tmp_path):
    pytest.importorskip("onnx")
    from typer.testing import CliRunner

    from drifa_edge.cli import app
    from drifa_edge.errors import UntrustedModelError

    _, noise = learned_and_shuffled
    runner = CliRunner()
    refused = runner.invoke(app, ["export", str(noise), "--out", str(tmp_path / "a"), "--onnx", "--no-check"])
    assert isinstance(refused.exception, UntrustedModelError)
    assert "at chance" in str(refused.exception) and "--force" in str(refused.exception)
    assert not (tmp_path / "a").exists()
    forced = runner.invoke(
        app, ["export", str(noise), "--out", str(tmp_path / "b"), "--onnx", "--no-check", "--force"]
    )
    assert forced.exit_code == 0, forced.output
    assert (tmp_path / "b" / "model_card.json").is_file()


def test_train_cli_warns_loudly(learned_and_shuffled):
    from rich.console import Console

    from drifa_edge.cli.train import warn_if_at_chance

    learned, noise = learned_and_shuffled
    console = Console(record=True, width=300)
    assert warn_if_at_chance(noise, console)
    text = console.export_text()
    assert "AT CHANCE" in text and "derm" in text and "scan" in text
    quiet = Console(record=True, width=300)
    assert not warn_if_at_chance(learned, quiet)
    assert quiet.export_text() == ""
