"""Holm's correction, permutation p-values, shift bounds and the sample-size formula,
each against an independent computation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from drifa_edge.drift.stats import (
    cases_needed,
    detectable_shift,
    holm,
    permutation_p_value,
    shift_estimate,
)
from drifa_edge.errors import BadInputError


def _holm_by_definition(p: list[float], alpha: float) -> list[bool]:
    """Holm (1979) as stated: walk the sorted p-values, reject while p_(j) <= alpha / (m - j + 1)."""
    m = len(p)
    rejected = [False] * m
    for rank, i in enumerate(sorted(range(m), key=lambda k: p[k])):
        if p[i] > alpha / (m - rank):
            break
        rejected[i] = True
    return rejected


@pytest.mark.parametrize("seed", range(20))
def test_holm_rejects_what_the_definition_rejects(seed):
    rng = np.random.default_rng(seed)
    p = (rng.random(16) ** rng.uniform(1, 6)).tolist()  # a mix of small and large p-values
    adjusted, rejected = holm(p, 0.05)
    assert rejected == _holm_by_definition(p, 0.05)
    assert all(a >= q for a, q in zip(adjusted, p, strict=True))  # never below the raw p


def test_holm_hand_worked():
    # m = 4: sorted 0.01*4 = 0.04, 0.02*3 = 0.06, 0.03*2 = 0.06, 0.5*1 = 0.5
    adjusted, rejected = holm([0.03, 0.01, 0.5, 0.02], 0.05)
    assert adjusted == pytest.approx([0.06, 0.04, 0.5, 0.06])
    assert rejected == [False, True, False, False]


def test_holm_controls_the_family_wise_error_under_the_null():
    """16 true nulls with uniform p-values: some rejection in ~alpha of the families, not more."""
    rng = np.random.default_rng(0)
    families = 4000
    any_rejected = sum(any(holm(rng.random(16).tolist(), 0.05)[1]) for _ in range(families))
    # 16 independent nulls: P(any) = 1 - (1 - 0.05/16)^16 ~ 0.0488 for Bonferroni's first step;
    # binomial sd at 4000 families ~ 0.0034
    assert any_rejected / families <= 0.05 + 3 * 0.0035


def test_holm_refuses_bad_p_values():
    with pytest.raises(BadInputError, match="p-values"):
        holm([0.1, 1.5], 0.05)


def test_permutation_p_value_counts_the_observed_arrangement():
    null = np.arange(99, dtype=float)  # 0 .. 98
    assert permutation_p_value(1000.0, null) == pytest.approx(1 / 100)  # beyond every null value
    assert permutation_p_value(-1.0, null) == pytest.approx(1.0)
    assert permutation_p_value(49.0, null) == pytest.approx((1 + 50) / 100)  # ties count against


def test_shift_bounds_invert_the_test():
    rng = np.random.default_rng(1)
    null = rng.normal(0.0, 0.01, size=20000)
    est = shift_estimate(0.05, null, 0.025)
    assert est.shift == pytest.approx(0.05, abs=5e-4)
    # a normal null: bounds at +-1.96 sd
    assert est.low == pytest.approx(0.05 - 1.96 * 0.01, abs=6e-4)
    assert est.high == pytest.approx(0.05 + 1.96 * 0.01, abs=6e-4)
    assert est.spread == pytest.approx(0.01, rel=0.03)


def test_detectable_shift_and_cases_needed_agree():
    """At the size cases_needed gives, the detectable shift equals the margin (s ~ 1/sqrt(N))."""
    spread, margin, alpha, n = 0.02, 0.02, 0.05 / 16, 200
    need = cases_needed(n, spread, margin, alpha)
    assert need > n
    shrunk = spread * math.sqrt(n / need)
    assert detectable_shift(shrunk, margin, alpha, "difference") == pytest.approx(margin, rel=0.01)
    assert detectable_shift(shrunk, 0.0, 0.05, "equivalence") < 0  # margin 0: equivalence impossible
    # material: never below the margin, and the significance hurdle where that is larger
    assert detectable_shift(0.001, margin, alpha, "material") > margin
    assert cases_needed(n, 0.0, margin, alpha) == 0
