"""Calibration: reliability bins, ECE (equal-width and adaptive), MCE, and temperature scaling.

ECE (Guo et al. 2017, "On Calibration of Modern Neural Networks", eq. 3): cases binned by
confidence into ``bins`` equal-width bins over [0, 1]; ECE = sum_b |B_b|/N * |acc(B_b) - conf(B_b)|.
Empty bins are skipped. Temperature: the T > 0 minimising the NLL of the MC-mean
probabilities softmax(z / T) on validation logits.
"""

from __future__ import annotations

import numpy as np

from drifa_edge.errors import BadInputError
from drifa_edge.metrics._checks import _check_probs


def bin_index(confidence: np.ndarray, bins: int) -> np.ndarray:
    """Equal-width bin of each confidence: bin i holds (i/bins, (i+1)/bins], 0 goes to bin 0."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    return np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)


def ece_from_parts(index: np.ndarray, confidence: np.ndarray, correct: np.ndarray, bins: int) -> float:
    """:func:`ece` from each case's bin (:func:`bin_index`), confidence and correctness (0/1)."""
    count = np.bincount(index, minlength=bins)
    gap = np.abs(np.bincount(index, weights=correct, minlength=bins) - np.bincount(index, confidence, bins))
    return float(gap.sum() / count.sum())


def reliability_bins(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> dict[str, np.ndarray]:
    """Equal-width confidence bins over [0, 1]: ``edges`` (bins+1), and per bin
    ``count``, ``accuracy`` and ``confidence`` (0 where ``count`` is 0).

    Bin i holds confidences in (edges[i], edges[i+1]]; a confidence of exactly 0
    goes to the first bin.
    """
    if bins < 1:
        raise BadInputError(f"bins must be >= 1, got {bins}")
    probs, labels = _check_probs(probs, labels)
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = bin_index(conf, bins)
    count = np.bincount(idx, minlength=bins)
    safe = np.maximum(count, 1)
    return {
        "edges": edges,
        "count": count,
        "accuracy": np.bincount(idx, weights=correct, minlength=bins) / safe,
        "confidence": np.bincount(idx, weights=conf, minlength=bins) / safe,
    }


def ece(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error with equal-width bins: sum_b n_b/N |acc_b - conf_b|."""
    r = reliability_bins(probs, labels, bins)
    gap = np.abs(r["accuracy"] - r["confidence"])
    return float(np.sum(r["count"] * gap) / r["count"].sum())


def mce(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Maximum calibration error: the largest |acc_b - conf_b| over non-empty bins."""
    r = reliability_bins(probs, labels, bins)
    gap = np.abs(r["accuracy"] - r["confidence"])
    return float(gap[r["count"] > 0].max())


def adaptive_ece(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE with equal-mass bins: cases sorted by confidence (stable sort, ties in
    input order) and split into ``min(bins, N)`` groups whose sizes differ by at most one."""
    if bins < 1:
        raise BadInputError(f"bins must be >= 1, got {bins}")
    probs, labels = _check_probs(probs, labels)
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    order = np.argsort(conf, kind="stable")
    total = 0.0
    for group in np.array_split(order, min(bins, conf.size)):
        total += group.size * abs(correct[group].mean() - conf[group].mean())
    return float(total / conf.size)
