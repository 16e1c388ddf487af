"""Uncertainty formulas against numbers worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from drifa_edge.errors import BadInputError, ConfigError
from drifa_edge.metrics.uncertainty import (
    REFERRAL_METRICS,
    entropy,
    fit_referral_threshold,
    refer,
    referral_score,
    summarize,
)


def test_two_sample_example_by_hand():
    # One case, two MC samples, two classes: p1 = (0.8, 0.2), p2 = (0.4, 0.6).
    # mean = (0.6, 0.4)
    # predictive entropy = -(0.6 ln 0.6 + 0.4 ln 0.4) = 0.6 * 0.510826 + 0.4 * 0.916291 = 0.673012
    # H(p1) = 0.8 * 0.223144 + 0.2 * 1.609438 = 0.500402;  H(p2) = H(mean) = 0.673012
    # expected entropy = (0.500402 + 0.673012) / 2 = 0.586707
    # mutual information = 0.673012 - 0.586707 = 0.086305
    # std (ddof=1) of (0.8, 0.4) = 0.4 / sqrt(2) = 0.282843, the same for class 1
    s = summarize(np.array([[[0.8, 0.2], [0.4, 0.6]]]))
    np.testing.assert_allclose(s["mean"], [[0.6, 0.4]], atol=1e-12)
    assert s["predicted"][0] == 0
    assert s["confidence"][0] == pytest.approx(0.6)
    assert s["predictive_entropy"][0] == pytest.approx(0.673012, abs=1e-6)
    assert s["expected_entropy"][0] == pytest.approx(0.586707, abs=1e-6)
    assert s["mutual_information"][0] == pytest.approx(0.086305, abs=1e-6)
    np.testing.assert_allclose(s["std"], [[0.282843, 0.282843]], atol=1e-6)
    assert s["least_confidence"][0] == pytest.approx(0.4)


def test_disagreeing_certain_samples_are_pure_epistemic():
    # p1 = (1, 0), p2 = (0, 1): each sample is certain (expected entropy 0), they disagree: MI = ln 2
    s = summarize(np.array([[[1.0, 0.0], [0.0, 1.0]]]))
    assert s["expected_entropy"][0] == pytest.approx(0.0, abs=1e-9)
    assert s["mutual_information"][0] == pytest.approx(np.log(2), abs=1e-9)


def test_identical_samples_have_zero_mutual_information():
    p = np.array([0.2, 0.3, 0.5])
    s = summarize(np.tile(p, (3, 5, 1)))
    np.testing.assert_allclose(s["mutual_information"], 0.0, atol=1e-12)
    np.testing.assert_allclose(s["predictive_entropy"], s["expected_entropy"], atol=1e-12)
    np.testing.assert_allclose(s["std"], 0.0, atol=1e-12)


def test_decomposition_and_mi_nonnegative_on_random_samples():
    rng = np.random.default_rng(0)
    samples = rng.dirichlet(np.full(5, 0.7), size=(64, 30))  # (B, S, C)
    s = summarize(samples)
    np.testing.assert_allclose(
        s["predictive_entropy"], s["expected_entropy"] + s["mutual_information"], atol=1e-12
    )
    assert (s["mutual_information"] >= 0).all()
    assert (s["mutual_information"] > 1e-3).any()  # spread samples must show disagreement
    # against a direct computation of the same definitions
    mean = samples.mean(axis=1)
    direct_pe = -(mean * np.log(mean)).sum(-1)
    direct_ee = -(samples * np.log(samples)).sum(-1).mean(-1)
    np.testing.assert_allclose(s["predictive_entropy"], direct_pe, rtol=1e-9)
    np.testing.assert_allclose(s["expected_entropy"], direct_ee, rtol=1e-9)


def test_entropy_treats_zero_log_zero_as_zero():
    assert entropy(np.array([1.0, 0.0, 0.0])) == pytest.approx(0.0)
    assert entropy(np.array([0.25] * 4)) == pytest.approx(np.log(4))


@pytest.mark.parametrize(
    "bad",
    [np.ones((2, 3)), np.full((1, 2, 2), np.nan), np.array([[[2.0, -1.0]]]), np.array([[[0.3, 0.3]]])],
    ids=["2d", "nan", "negative", "not-normalized"],
)
def test_summarize_refuses_non_probabilities(bad):
    with pytest.raises(BadInputError):
        summarize(bad)


def test_referral_threshold_hits_the_target_rate():
    scores = np.random.default_rng(1).random(1000)
    t = fit_referral_threshold(scores, 0.1)
    assert refer(scores, t).mean() == pytest.approx(0.1, abs=0.002)
    assert not refer(scores, fit_referral_threshold(scores, 0.0)).any()
    assert refer(np.array([0.5, 0.5000001]), 0.5).tolist() == [False, True]  # strictly above


def test_referral_score_metrics():
    s = summarize(np.array([[[0.8, 0.2], [0.4, 0.6]]]))
    for metric in REFERRAL_METRICS:
        assert referral_score(s, metric).shape == (1,)
    assert referral_score(s, "least_confidence")[0] == pytest.approx(0.4)
    with pytest.raises(ConfigError, match="mutual_information"):
        referral_score(s, "mutual_info")


def test_referral_threshold_refuses_bad_input():
    with pytest.raises(BadInputError):
        fit_referral_threshold(np.array([]), 0.1)
    with pytest.raises(BadInputError):
        fit_referral_threshold(np.array([0.1, np.nan]), 0.1)
    with pytest.raises(BadInputError):
        fit_referral_threshold(np.array([0.1]), 1.0)
