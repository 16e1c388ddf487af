"""Proper scoring rules of predicted probabilities (N, C) against labels (N,): NLL, Brier,
from ``sklearn.metrics`` (the ``[check]`` extra, imported on first use).

``log_loss`` clips probabilities at float64's machine epsilon (2.2e-16: a probability of
exactly 0 costs 36 nats).
"""

from __future__ import annotations

import numpy as np

from drifa_edge.metrics._checks import _check_probs
from drifa_edge.metrics._libraries import sklearn_metrics


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the true class (nats): ``sklearn.metrics.log_loss``."""
    probs, labels = _check_probs(probs, labels)
    classes = np.arange(probs.shape[1])
    # rows were checked to sum to 1 within tolerance; exact sums keep log_loss from warning
    probs = probs / probs.sum(axis=1, keepdims=True)
    return float(sklearn_metrics().log_loss(labels, probs, labels=classes))


def brier(probs: np.ndarray, labels: np.ndarray) -> float:
    """Multi-class Brier score: mean over cases of sum_c (p_c - 1[c = y])^2, in [0, 2]
    (``sklearn.metrics.brier_score_loss`` with every class listed, not halved)."""
    probs, labels = _check_probs(probs, labels)
    classes = np.arange(probs.shape[1])
    probs = probs / probs.sum(axis=1, keepdims=True)  # as in nll: exact sums, no warning
    return float(sklearn_metrics().brier_score_loss(labels, probs, labels=classes, scale_by_half=False))
