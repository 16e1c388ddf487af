"""Agreement between two models on the same cases: KL divergence (numpy), Spearman correlation
(``scipy.stats``, the ``[check]`` extra)."""

from __future__ import annotations

import numpy as np

from drifa_edge.errors import BadInputError
from drifa_edge.metrics._checks import EPS, check_probabilities
from drifa_edge.metrics._libraries import scipy_stats


def kl_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Per-case KL(p || q) in nats for rows of (N, C); 0 log 0 = 0, q clipped at EPS."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if p.shape != q.shape or p.ndim != 2:
        raise BadInputError(f"KL needs two (cases, classes) arrays of one shape, got {p.shape} and {q.shape}")
    p, q = check_probabilities(p, "KL p"), check_probabilities(q, "KL q")
    ratio = np.log(np.clip(p, EPS, 1.0)) - np.log(np.clip(q, EPS, 1.0))
    return np.maximum(np.sum(np.where(p > 0, p * ratio, 0.0), axis=1), 0.0)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (Pearson correlation of average ranks): ``scipy.stats.spearmanr``.

    Raises BadInputError when either input is constant (the correlation is undefined).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape or a.size < 2:
        raise BadInputError(f"spearman needs two 1-D arrays of equal length >= 2, got {a.shape}, {b.shape}")
    if np.all(a == a[0]) or np.all(b == b[0]):
        raise BadInputError("spearman: one input is constant, the correlation is undefined")
    return float(np.clip(scipy_stats().spearmanr(a, b).statistic, -1.0, 1.0))
