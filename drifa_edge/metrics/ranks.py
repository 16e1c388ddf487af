"""Rankings: average ranks, AUROC / AUPR of an error score, risk-coverage of a confidence.

AUROC / AUPR with one class present raise :class:`BadInputError` (undefined), never NaN.
"""

from __future__ import annotations

import math

import numpy as np

from drifa_edge.errors import BadInputError
from drifa_edge.metrics._checks import _check_scores


def rankdata(a: np.ndarray) -> np.ndarray:
    """Ranks 1..N with ties given their average rank (scipy's ``method="average"``)."""
    a = np.asarray(a, dtype=np.float64)
    order = np.argsort(a, kind="stable")
    sorted_a = a[order]
    # first index of each run of equal values, and the run lengths
    starts = np.flatnonzero(np.r_[True, sorted_a[1:] != sorted_a[:-1]])
    lengths = np.diff(np.r_[starts, a.size])
    avg = starts + (lengths + 1) / 2.0  # mean of ranks start+1 .. start+length
    ranks = np.empty(a.size)
    ranks[order] = np.repeat(avg, lengths)
    return ranks


def rankdata_rows(a: np.ndarray) -> np.ndarray:
    """:func:`rankdata` of every row of a 2-D array at once (average ranks for ties)."""
    a = np.asarray(a, dtype=np.float64)
    rows, n = a.shape
    order = np.argsort(a, axis=1)  # any sort: tied values share their average rank anyway
    sorted_a = np.take_along_axis(a, order, axis=1)
    starts = np.ones((rows, n), dtype=bool)
    starts[:, 1:] = sorted_a[:, 1:] != sorted_a[:, :-1]
    ends = np.ones((rows, n), dtype=bool)
    ends[:, :-1] = starts[:, 1:]
    position = np.broadcast_to(np.arange(n), (rows, n))
    first = np.maximum.accumulate(np.where(starts, position, 0), axis=1)
    last = np.minimum.accumulate(np.where(ends, position, n - 1)[:, ::-1], axis=1)[:, ::-1]
    ranks = np.empty((rows, n))
    np.put_along_axis(ranks, order, (first + last) / 2.0 + 1.0, axis=1)
    return ranks


def auroc(scores: np.ndarray, positives: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for separating ``positives`` (True)
    from the rest; ties count one half (Mann-Whitney U with average ranks).

    Raises BadInputError when only one class is present (the area is undefined).
    """
    scores, positives = _check_scores(scores, positives, "auroc")
    n_pos = int(positives.sum())
    n_neg = positives.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise BadInputError(f"AUROC needs positives and negatives, got {n_pos} and {n_neg}")
    ranks = rankdata(scores)
    u = ranks[positives].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def aupr(scores: np.ndarray, positives: np.ndarray) -> float:
    """Average precision: sum over distinct thresholds of (R_k - R_{k-1}) P_k, with
    tied scores entering together (scikit-learn's ``average_precision_score``).

    Raises BadInputError when there is no positive (recall undefined).
    """
    scores, positives = _check_scores(scores, positives, "aupr")
    n_pos = int(positives.sum())
    if n_pos == 0:
        raise BadInputError("AUPR needs at least one positive case, got none")
    order = np.argsort(-scores, kind="stable")
    s, pos = scores[order], positives[order]
    last_of_tie = np.r_[s[1:] != s[:-1], True]
    tp = np.cumsum(pos)[last_of_tie]
    seen = np.flatnonzero(last_of_tie) + 1
    precision = tp / seen
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


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
