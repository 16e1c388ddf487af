"""Input checks and conventions shared by the metrics (see :mod:`drifa_edge.metrics`)."""

from __future__ import annotations

import numpy as np

from drifa_edge.errors import BadInputError

EPS = 1e-12
UNSCORED = -1


def _check_labels(y: np.ndarray, num_classes: int | None = None, name: str = "labels") -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or y.size == 0:
        raise BadInputError(f"{name} must be a non-empty 1-D array, got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.mod(y, 1) == 0):
            raise BadInputError(f"{name} must be integers, got dtype {y.dtype}")
        y = y.astype(np.int64)
    if y.min() < 0 or (num_classes is not None and y.max() >= num_classes):
        raise BadInputError(
            f"{name} must lie in [0, {num_classes}), got range [{y.min()}, {y.max()}]; "
            "drop unscored rows (-1) with drift.metrics.scored first"
        )
    return y


def _check_probs(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise BadInputError(f"probs must be shaped (cases, classes >= 2), got {probs.shape}")
    if not np.isfinite(probs).all():
        raise BadInputError("probs contain NaN or Inf")
    labels = _check_labels(labels, probs.shape[1])
    if labels.shape[0] != probs.shape[0]:
        raise BadInputError(f"{probs.shape[0]} rows of probs but {labels.shape[0]} labels")
    return probs, labels


def _check_pair(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    y_true = _check_labels(y_true, num_classes, "y_true")
    y_pred = _check_labels(y_pred, num_classes, "y_pred")
    if y_true.shape != y_pred.shape:
        raise BadInputError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in length")
    return y_true, y_pred


def _check_scores(scores: np.ndarray, flags: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    flags = np.asarray(flags).astype(bool)
    if scores.ndim != 1 or scores.shape != flags.shape or scores.size == 0:
        raise BadInputError(f"{name}: need two non-empty 1-D arrays of equal length, got {scores.shape}")
    if not np.isfinite(scores).all():
        raise BadInputError(f"{name}: scores contain NaN or Inf")
    return scores, flags


def scored(labels: np.ndarray) -> np.ndarray:
    """Boolean mask of the rows that carry a label (label != -1)."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise BadInputError(f"labels must be 1-D, got shape {labels.shape}")
    return labels != UNSCORED
