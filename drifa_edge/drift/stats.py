"""Statistics of the gate's decisions: permutation p-values, Holm's correction,
shift intervals and the sample size a policy needs.

The null distributions come from :mod:`drifa_edge.drift.noise`. Every statistic
is oriented here as a *badness* (larger = the candidate is worse), so one set of
formulas serves criteria where higher is better (Spearman, agreement, accuracy)
and lower is better (KL, rate difference, ECE). KL is judged on the log scale,
because its margin is a ratio.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from drifa_edge.errors import BadInputError, missing_dependency

POWER = 0.8  # the power at which a "detectable" shift is quoted


def _norm_ppf(q: float) -> float:
    try:
        from scipy.stats import norm
    except ImportError as e:
        raise missing_dependency("scipy", "check") from e
    return float(norm.ppf(q))


def permutation_p_value(observed: float, null: np.ndarray) -> float:
    """One-sided p of "the candidate is no worse than the reference": (1 + #{null >= observed}) / (B + 1),
    the permutation p-value that counts the observed arrangement among the B + 1 (exact level, never 0)."""
    null = np.asarray(null, dtype=np.float64)
    if null.ndim != 1 or null.size == 0:
        raise BadInputError(f"the null distribution must be a non-empty 1-D array, got shape {null.shape}")
    return float((1 + np.count_nonzero(null >= observed - 1e-12)) / (null.size + 1))


def holm(p_values: Sequence[float], alpha: float) -> tuple[list[float], list[bool]]:
    """Holm's step-down correction (Holm 1979, *Scand. J. Statist.* 6:65-70) of m p-values.

    Returns (adjusted p-values, rejected at family-wise level ``alpha``). Adjusted
    p_(i) = max_{j <= i} min(1, (m - j + 1) p_(j)) over the sorted p-values; a
    hypothesis is rejected when its adjusted p is <= alpha. Controls the
    probability of any false rejection at ``alpha`` under any dependence between
    the tests (the gate's criteria share cases, so they are dependent).
    """
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1 or ((p < 0) | (p > 1)).any():
        raise BadInputError(f"p-values must be a 1-D array in [0, 1], got {p_values!r}")
    m = p.size
    order = np.argsort(p, kind="stable")
    adjusted_sorted = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * p[order]))
    adjusted = np.empty(m)
    adjusted[order] = adjusted_sorted
    return adjusted.tolist(), (adjusted <= alpha).tolist()


@dataclass(frozen=True)
class ShiftEstimate:
    """How much worse the candidate is than the null, in the criterion's (badness) units."""

    shift: float  # observed - median(null); > 0: worse than two runs of the reference
    low: float  # (1 - level) lower confidence bound: observed - quantile(null, level)
    high: float  # (1 - level) upper confidence bound: observed - quantile(null, 1 - level)
    spread: float  # standard deviation of the null: the MC noise of the statistic


def shift_estimate(observed: float, null: np.ndarray, level: float) -> ShiftEstimate:
    """Point estimate and one-sided bounds at ``level`` of the shift δ under a location model
    (the candidate's statistic is the null's distribution moved by δ), by test inversion:
    ``low`` is the δ a one-sided test at ``level`` would just reject, ``high`` likewise the
    other way. ``level`` e.g. 0.02 gives 98 % one-sided bounds."""
    if not 0.0 < level < 0.5:
        raise BadInputError(f"confidence level of a bound must be in (0, 0.5), got {level}")
    null = np.asarray(null, dtype=np.float64)
    q_low, q_mid, q_high = np.quantile(null, [level, 0.5, 1.0 - level])
    return ShiftEstimate(
        shift=float(observed - q_mid),
        low=float(observed - q_high),
        high=float(observed - q_low),
        spread=float(null.std(ddof=1)) if null.size > 1 else 0.0,
    )


def z_of(alpha: float) -> float:
    """The one-sided normal quantile z_{1 - alpha}."""
    return _norm_ppf(1.0 - alpha)


def detectable_shift(spread: float, margin: float, alpha: float, decision: str) -> float:
    """The smallest shift the gate fails with probability :data:`POWER`, normal approximation.

    ``difference``: fails when shift > z_a s, so (z_a + z_power) s; ``material``: fails
    when shift > max(margin, z_a s), so max(margin, z_a s) + z_power s; ``equivalence``
    fails anything whose upper bound passes the margin: the quoted number is the shift
    it *passes* with probability POWER, margin - (z_a + z_power) s (< 0: even an
    unchanged build fails more often than 1 - POWER). ``alpha`` is the per-test level
    (Bonferroni's alpha / m for the difference family, alpha for equivalence).
    """
    z_a, z_p = z_of(alpha), _norm_ppf(POWER)
    if decision == "difference":
        return (z_a + z_p) * spread
    if decision == "material":
        return max(margin, z_a * spread) + z_p * spread
    if decision == "equivalence":
        return margin - (z_a + z_p) * spread
    raise BadInputError(f"unknown decision rule {decision!r}")


def cases_needed(cases: int, spread: float, margin: float, alpha: float) -> int:
    """Cases for which (z_a + z_power) s <= margin, with s shrinking as 1/sqrt(cases).

    For the difference test this is the size at which a shift of one margin is found with
    probability POWER; for the equivalence test, the size at which an unchanged build passes
    with probability POWER. Mean-type statistics (agreement, accuracy, mean KL, ECE) follow
    the 1/sqrt(N) law; Spearman's does to first order.
    """
    if margin <= 0:
        return cases if spread == 0 else 10**9
    need = (z_of(alpha) + _norm_ppf(POWER)) * spread / margin
    return int(math.ceil(cases * need * need))
