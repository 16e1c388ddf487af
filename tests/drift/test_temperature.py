"""Temperature scaling: recovers a known temperature, never worsens NLL, thresholds hit the target rate."""

from __future__ import annotations

import numpy as np
import pytest

from drifa_edge.artifact.card import apply_calibration, default_card
from drifa_edge.errors import BadInputError
from drifa_edge.metrics.temperature import fit_calibration, fit_temperature, mc_nll
from drifa_edge.model.config import ModelConfig, TaskSpec


def _calibrated_logits(rng, n=4000, c=5, samples=None):
    """Logits z whose softmax(z) is calibrated: labels are drawn from softmax(z)."""
    z = rng.normal(size=(n, c)) * 1.5
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(c, p=row) for row in p])
    if samples:
        z = z[:, None, :] + rng.normal(size=(n, samples, c)) * 0.05
    return z, labels


@pytest.mark.parametrize("true_t", [0.5, 2.5])
def test_recovers_a_known_temperature(true_t):
    rng = np.random.default_rng(0)
    z, labels = _calibrated_logits(rng)
    # the model reports z * true_t, so dividing by true_t calibrates it again
    fitted = fit_temperature(z * true_t, labels)
    assert fitted == pytest.approx(true_t, rel=0.08)  # 4000 cases: sampling error of a few %


def test_mc_logits_and_unscored_rows():
    rng = np.random.default_rng(1)
    z, labels = _calibrated_logits(rng, n=3000, samples=8)
    labels = labels.copy()
    labels[-200:] = -1
    fitted = fit_temperature(z * 2.0, labels)
    assert fitted == pytest.approx(2.0, rel=0.1)


def test_never_worse_than_t1_and_minimum():
    rng = np.random.default_rng(2)
    z, labels = _calibrated_logits(rng, n=500, samples=4)
    logits = z * 3.0
    t = fit_temperature(logits, labels)
    nll_t = mc_nll(logits, labels, t)
    assert nll_t <= mc_nll(logits, labels, 1.0)
    # a local minimum: a step either side does not improve (independent check of the search)
    assert nll_t <= mc_nll(logits, labels, t * 1.02) + 1e-9
    assert nll_t <= mc_nll(logits, labels, t / 1.02) + 1e-9
    # already calibrated at T = 1 on a tiny set: never returns something worse
    z2, y2 = _calibrated_logits(np.random.default_rng(3), n=12)
    assert mc_nll(z2, y2, fit_temperature(z2, y2)) <= mc_nll(z2, y2, 1.0)


def test_bad_input():
    with pytest.raises(BadInputError, match="scored"):
        fit_temperature(np.zeros((3, 2)), np.array([-1, -1, -1]))
    with pytest.raises(BadInputError, match="NaN"):
        fit_temperature(np.full((3, 2), np.nan), np.array([0, 1, 0]))


def test_fit_calibration_hits_the_referral_rate_and_writes_the_card():
    rng = np.random.default_rng(4)
    cfg = ModelConfig(
        tasks=(TaskSpec("a", ("x", "y", "z")), TaskSpec("b", ("p", "q"))), image_size=32, width=0.125
    )
    logits = {"a": rng.normal(size=(200, 10, 3)) * 2, "b": rng.normal(size=(200, 10, 2))}
    labels = {"a": rng.integers(0, 3, 200), "b": rng.integers(0, 2, 200)}
    fitted = fit_calibration(logits, labels, target_rate=0.1, temperatures={"b": 1.0})
    assert fitted["b"]["temperature"] == 1.0 and fitted["a"]["cases"] == 200
    card = apply_calibration(default_card(cfg), fitted, 0.1, provenance={"split": "val"})
    assert card.temperature_of("a") == pytest.approx(fitted["a"]["temperature"])
    assert card.referral["a"].threshold == fitted["a"]["threshold"] and card.referral["a"].target_rate == 0.1
    assert card.metrics["calibration"] == {"split": "val"}
