"""Paired statistics for the drift gate: pure numpy, no I/O.

Both tests pair cases: the reference and the candidate saw the same images, so
the question is about per-case differences, not two independent samples.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from drifa_edge.errors import BadInputError
from drifa_edge.metrics import rankdata

ALTERNATIVES = ("greater", "less", "two-sided")


@dataclass(frozen=True)
class WilcoxonResult:
    statistic: float  # W+, the sum of the ranks of the positive differences
    p_value: float
    n: int  # non-zero differences that entered the test
    z: float


def _normal_sf(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def wilcoxon_signed_rank(d: np.ndarray, alternative: str = "greater") -> WilcoxonResult:
    """Wilcoxon signed-rank test of "the differences ``d`` are centred on 0",
    normal approximation with the tie correction, no continuity correction.

    Zero differences are dropped (Wilcoxon's convention, scipy's default
    ``zero_method="wilcox"``). ``alternative="greater"``: the differences tend to
    be positive. With no non-zero difference there is no evidence either way:
    p = 1. The approximation is fine from about 20 non-zero differences; the gate
    sees ~100 cases per task.
    """
    if alternative not in ALTERNATIVES:
        raise BadInputError(f"alternative must be one of {ALTERNATIVES}, got {alternative!r}")
    d = np.asarray(d, dtype=np.float64)
    if d.ndim != 1 or not np.isfinite(d).all():
        raise BadInputError(f"differences must be a finite 1-D array, got shape {d.shape}")
    d = d[d != 0]
    n = d.size
    if n == 0:
        return WilcoxonResult(statistic=0.0, p_value=1.0, n=0, z=0.0)
    ranks = rankdata(np.abs(d))
    w_plus = float(ranks[d > 0].sum())
    mean = n * (n + 1) / 4.0
    _, ties = np.unique(np.abs(d), return_counts=True)
    var = n * (n + 1) * (2 * n + 1) / 24.0 - float(np.sum(ties**3 - ties)) / 48.0
    z = (w_plus - mean) / math.sqrt(var) if var > 0 else 0.0
    if alternative == "greater":
        p = _normal_sf(z)
    elif alternative == "less":
        p = _normal_sf(-z)
    else:
        p = min(1.0, 2.0 * _normal_sf(abs(z)))
    return WilcoxonResult(statistic=w_plus, p_value=float(p), n=int(n), z=float(z))


@dataclass(frozen=True)
class BootstrapInterval:
    estimate: float  # the statistic on all cases
    low: float
    high: float
    level: float  # e.g. 0.95


def paired_bootstrap(
    statistic: Callable[[np.ndarray], float],
    cases: int,
    reps: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    vectorized: bool = False,
) -> BootstrapInterval:
    """Percentile bootstrap interval of ``statistic(index)`` over cases resampled
    with replacement; ``statistic`` receives an index array and must evaluate both
    sides of a comparison on the same cases (that is what makes it paired). With
    ``vectorized`` it receives all draws at once, an index array (reps, cases), and
    returns one value per row."""
    if cases < 1:
        raise BadInputError(f"bootstrap needs at least one case, got {cases}")
    if reps < 100:
        raise BadInputError(f"bootstrap needs >= 100 repetitions for a usable interval, got {reps}")
    if not 0.5 <= level < 1.0:
        raise BadInputError(f"confidence level must be in [0.5, 1), got {level}")
    rng = np.random.default_rng(seed)
    if vectorized:  # statistic maps (rows, cases) index arrays to (rows,) values
        estimate = float(np.asarray(statistic(np.arange(cases)[None]))[0])
        draws = np.asarray(statistic(rng.integers(0, cases, size=(reps, cases))), dtype=np.float64)
    else:
        estimate = float(statistic(np.arange(cases)))
        draws = np.array([statistic(rng.integers(0, cases, size=cases)) for _ in range(reps)])
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(draws, [tail, 1.0 - tail])
    return BootstrapInterval(estimate=estimate, low=float(low), high=float(high), level=level)
