"""95 % confidence intervals of test metrics (training.intervals)."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("scipy")

from drifa_edge.errors import BadInputError  # noqa: E402
from drifa_edge.training.intervals import bootstrap_interval, metric_intervals, wilson_interval  # noqa: E402

Z95 = 1.959963984540054


def _wilson_by_hand(k: int, n: int) -> tuple[float, float]:
    """Wilson (1927) score interval, written out."""
    p = k / n
    centre = (p + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
    half = Z95 / (1 + Z95**2 / n) * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n**2))
    return centre - half, centre + half


@pytest.mark.parametrize(("k", "n"), [(49, 118), (0, 10), (10, 10), (277, 304)])
def test_wilson_matches_the_formula(k, n):
    assert wilson_interval(k, n) == pytest.approx(_wilson_by_hand(k, n), abs=1e-9)


def test_wilson_at_118_cases_is_about_nine_points_either_side():
    low, high = wilson_interval(49, 118)  # the skin test split at ~0.42
    assert 0.08 < (high - low) / 2 < 0.10


def test_bad_counts_are_refused():
    with pytest.raises(BadInputError):
        wilson_interval(5, 3)
    with pytest.raises(BadInputError):
        bootstrap_interval(lambda i: 0.0, 1)


def test_bootstrap_of_a_mean_matches_the_normal_approximation():
    x = np.random.default_rng(0).normal(0.0, 1.0, 400)
    low, high = bootstrap_interval(lambda i: float(x[i].mean()), x.size, resamples=2000, seed=1)
    se = x.std(ddof=1) / math.sqrt(x.size)
    assert low == pytest.approx(x.mean() - Z95 * se, abs=0.3 * se)
    assert high == pytest.approx(x.mean() + Z95 * se, abs=0.3 * se)


def test_metric_intervals_bracket_the_point_estimates_and_shrink_with_more_cases():
    from drifa_edge.metrics import balanced_accuracy, ece, macro_f1

    def case(n, seed):
        rng = np.random.default_rng(seed)
        y = rng.integers(0, 3, n)
        logits = rng.normal(0, 1, (n, 3))
        logits[np.arange(n), y] += 1.5
        p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        return p, y

    widths = []
    for n in (100, 1600):
        p, y = case(n, 0)
        ci = metric_intervals(p, y, seed=0, resamples=300)
        pred = p.argmax(1)
        point = {
            "accuracy": float((pred == y).mean()),
            "balanced_accuracy": balanced_accuracy(y, pred, 3),
            "macro_f1": macro_f1(y, pred, 3),
            "ece": ece(p, y, 15),
        }
        for k, v in point.items():
            assert ci[k]["low"] <= v <= ci[k]["high"] or k == "ece"  # ECE is biased upward in resamples
            assert ci[k]["low"] < ci[k]["high"]
        widths.append(ci["balanced_accuracy"]["high"] - ci["balanced_accuracy"]["low"])
        assert "Wilson" in ci["accuracy"]["method"] and "bootstrap" in ci["macro_f1"]["method"]
    assert widths[1] < widths[0] / 2  # 16x the cases: about a quarter of the width
