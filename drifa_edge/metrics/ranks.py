"""Rankings: average ranks, AUROC / AUPR of an error score, risk-coverage of a confidence.

AUROC / AUPR with one class present raise :class:`BadInputError` (undefined), never NaN.
Ranks come from ``scipy.stats``, AUROC / AUPR from ``sklearn.metrics`` (the ``[check]``
extra, imported on first use); risk-coverage is numpy.
"""

from __future__ import annotations

import math

import numpy as np

from drifa_edge.errors import BadInputError
from drifa_edge.metrics._checks import _check_scores
from drifa_edge.metrics._libraries import scipy_stats, sklearn_metrics


def rankdata(a: np.ndarray) -> np.ndarray:
    """Ranks 1..N of a 1-D array, ties given their average rank: ``scipy.stats.rankdata``
    (``method="average"``), float64. Needs the ``[check]`` extra."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 1:
        raise BadInputError(f"rankdata needs a 1-D array, got shape {a.shape}")
    return np.asarray(scipy_stats().rankdata(a), dtype=np.float64)


def rankdata_rows(a: np.ndarray) -> np.ndarray:
    """:func:`rankdata` of every row of a 2-D array (rows, N) at once (average ranks for ties)."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2:
        raise BadInputError(f"rankdata_rows needs a 2-D array, got shape {a.shape}")
    return np.asarray(scipy_stats().rankdata(a, axis=1), dtype=np.float64)


def auroc(scores: np.ndarray, positives: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for separating ``positives`` (True) from the
    rest, ties counting one half (the Mann-Whitney U / (n_pos n_neg)):
    ``sklearn.metrics.roc_auc_score``. Needs the ``[check]`` extra.

    Raises BadInputError when only one class is present (the area is undefined).
    """
    scores, positives = _check_scores(scores, positives, "auroc")
    n_pos = int(positives.sum())
    n_neg = positives.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise BadInputError(f"AUROC needs positives and negatives, got {n_pos} and {n_neg}")
    return float(sklearn_metrics().roc_auc_score(positives, scores))


def aupr(scores: np.ndarray, positives: np.ndarray) -> float:
    """Average precision: sum over distinct thresholds of (R_k - R_{k-1}) P_k, tied scores
    entering together: ``sklearn.metrics.average_precision_score``. Needs ``[check]``.

    Raises BadInputError when there is no positive (recall undefined).
    """
    scores, positives = _check_scores(scores, positives, "aupr")
    if not positives.any():
        raise BadInputError("AUPR needs at least one positive case, got none")
    return float(sklearn_metrics().average_precision_score(positives, scores))


def risk_coverage(confidence: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Selective-prediction curve: keep the most confident cases first.

    Returns (coverages, risks, aurc). Cases with equal confidence cannot be
    separated, so the curve has one point per distinct confidence (coverage =
    share of cases at least that confident, risk = their error rate), and AURC
    is the step-function area sum_k (coverage_k - coverage_{k-1}) * risk_k. With
    no ties that is the usual (1/N) sum_k risk(top k). Pass ``-uncertainty`` to
    rank by an uncertainty score.
    """
    confidence, correct = _check_scores(confidence, correct, "risk_coverage")
    order = np.argsort(-confidence, kind="stable")
    c, ok = confidence[order], correct[order]
    last_of_tie = np.r_[c[1:] != c[:-1], True]
    kept = np.flatnonzero(last_of_tie) + 1
    errors = np.cumsum(~ok)[last_of_tie]
    coverages = kept / c.size
    risks = errors / kept
    aurc = float(np.sum(np.diff(np.r_[0.0, coverages]) * risks))
    return coverages, risks, aurc


def accuracy_at_coverage(confidence: np.ndarray, correct: np.ndarray, coverage: float) -> float:
    """Accuracy on the ceil(coverage * N) most confident cases (ties in input order)."""
    confidence, correct = _check_scores(confidence, correct, "accuracy_at_coverage")
    if not 0.0 < coverage <= 1.0:
        raise BadInputError(f"coverage must be in (0, 1], got {coverage}")
    keep = max(1, math.ceil(coverage * confidence.size - 1e-9))
    order = np.argsort(-confidence, kind="stable")[:keep]
    return float(correct[order].mean())
