"""Wilcoxon signed-rank and paired bootstrap against hand-worked values and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from drifa_edge.drift.stats import paired_bootstrap, wilcoxon_signed_rank
from drifa_edge.errors import BadInputError


def test_wilcoxon_by_hand():
    # d = [1, -2, 3, 4]: ranks of |d| 1,2,3,4; W+ = 1 + 3 + 4 = 8; n = 4
    # mean = 5, var = 4*5*9/24 = 7.5; z = 3 / sqrt(7.5)
    r = wilcoxon_signed_rank(np.array([1.0, -2.0, 3.0, 4.0]), alternative="greater")
    z = 3 / math.sqrt(7.5)
    assert r.statistic == 8 and r.n == 4
    assert r.z == pytest.approx(z)
    assert r.p_value == pytest.approx(0.5 * math.erfc(z / math.sqrt(2)))


def test_wilcoxon_zeros_dropped_and_all_zero():
    r = wilcoxon_signed_rank(np.array([0.0, 0.0, 1.0, -2.0, 3.0, 4.0]))
    assert r.n == 4 and r.statistic == 8
    assert wilcoxon_signed_rank(np.zeros(10)).p_value == 1.0


@pytest.mark.parametrize("alternative", ["greater", "less", "two-sided"])
def test_wilcoxon_against_scipy(alternative):
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(11)
    d = np.round(rng.normal(0.1, 1.0, size=120), 1)  # ties and a few zeros
    ours = wilcoxon_signed_rank(d, alternative)
    ref = stats.wilcoxon(d, alternative=alternative, method="approx", zero_method="wilcox", correction=False)
    assert ours.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    # scipy reports W+ for one-sided tests and min(W+, W-) for two-sided
    if alternative != "two-sided":
        assert ours.statistic == pytest.approx(ref.statistic)


def test_wilcoxon_detects_a_shift_and_not_noise():
    rng = np.random.default_rng(0)
    assert wilcoxon_signed_rank(rng.normal(0.5, 1, 100)).p_value < 1e-3
    assert wilcoxon_signed_rank(rng.normal(-0.5, 1, 100)).p_value > 0.99


def test_paired_bootstrap_interval_covers_the_difference():
    rng = np.random.default_rng(1)
    a = rng.random(200) < 0.8
    b = a.copy()
    b[:20] = ~b[:20]  # a handful of flips
    diff = b.mean() - a.mean()
    ci = paired_bootstrap(lambda i: b[i].mean() - a[i].mean(), 200, reps=1000, seed=3)
    assert ci.estimate == pytest.approx(diff)
    assert ci.low <= diff <= ci.high and ci.low < ci.high
    same = paired_bootstrap(lambda i: a[i].mean() - a[i].mean(), 200, reps=200)
    assert same.low == same.high == 0.0  # a paired comparison of identical sides has no spread


def test_bootstrap_rejects_bad_settings():
    with pytest.raises(BadInputError):
        paired_bootstrap(lambda i: 0.0, 10, reps=5)
    with pytest.raises(BadInputError):
        paired_bootstrap(lambda i: 0.0, 0)


def test_vectorized_bootstrap_equals_the_loop():
    rng = np.random.default_rng(2)
    x = rng.random(150)
    loop = paired_bootstrap(lambda i: x[i].mean(), 150, reps=300, seed=9)
    rows = paired_bootstrap(lambda i: x[i].mean(axis=1), 150, reps=300, seed=9, vectorized=True)
    assert rows.estimate == pytest.approx(loop.estimate)
    assert (rows.low, rows.high) == pytest.approx((loop.low, loop.high))
