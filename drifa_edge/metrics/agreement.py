"""Agreement between two models on the same cases: KL divergence, Spearman correlation."""

from __future__ import annotations

import math

import numpy as np

from drifa_edge.errors import BadInputError
from drifa_edge.metrics._checks import EPS
from drifa_edge.metrics.ranks import rankdata


def kl_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Per-case KL(p || q) in nats for rows of (N, C); 0 log 0 = 0, q clipped at EPS."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if p.shape != q.shape or p.ndim != 2:
        raise BadInputError(f"KL needs two (cases, classes) arrays of one shape, got {p.shape} and {q.shape}")
    if not (np.isfinite(p).all() and np.isfinite(q).all()):
        raise BadInputError("KL: probabilities contain NaN or Inf")
    ratio = np.log(np.clip(p, EPS, 1.0)) - np.log(np.clip(q, EPS, 1.0))
    return np.maximum(np.sum(np.where(p > 0, p * ratio, 0.0), axis=1), 0.0)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (Pearson correlation of average ranks).

    Raises BadInputError when either input is constant (the correlation is undefined).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape or a.size < 2:
        raise BadInputError(f"spearman needs two 1-D arrays of equal length >= 2, got {a.shape}, {b.shape}")
    ra, rb = rankdata(a), rankdata(b)
    ra -= ra.mean()
    rb -= rb.mean()
    denom = math.sqrt(float(ra @ ra) * float(rb @ rb))
    if denom == 0.0:
        raise BadInputError("spearman: one input is constant, the correlation is undefined")
    return float(np.clip((ra @ rb) / denom, -1.0, 1.0))
