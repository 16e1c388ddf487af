"""Proper scoring rules of predicted probabilities (N, C) against labels (N,): NLL, Brier.

Log-probabilities are clipped at ``EPS`` = 1e-12 (a probability of exactly 0 costs 27.6 nats).
"""

from __future__ import annotations

import numpy as np

from drifa_edge.metrics._checks import EPS, _check_probs


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the true class (nats)."""
    probs, labels = _check_probs(probs, labels)
    p = probs[np.arange(labels.size), labels]
    return float(-np.mean(np.log(np.clip(p, EPS, 1.0))))


def brier(probs: np.ndarray, labels: np.ndarray) -> float:
    """Multi-class Brier score: mean over cases of sum_c (p_c - 1[c = y])^2, in [0, 2]."""
    probs, labels = _check_probs(probs, labels)
    onehot = np.zeros_like(probs)
    onehot[np.arange(labels.size), labels] = 1.0
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))
