"""Label metrics: confusion matrix, accuracy, balanced accuracy, per-class recall, macro F1.

``y_true`` / ``y_pred`` (N,) integers in [0, C); no -1 rows here (drop them with :func:`scored`).
Accuracy and macro-F1 come from ``sklearn.metrics`` (the ``[check]`` extra); the confusion
matrix, recall and balanced accuracy are numpy (the gate's permutation loop needs them fast).
"""

from __future__ import annotations

import numpy as np

from drifa_edge.errors import BadInputError
from drifa_edge.metrics._checks import (
    _check_labels,
    _check_pair,
)
from drifa_edge.metrics._libraries import sklearn_metrics


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) counts, rows = true class, columns = predicted class."""
    y_true, y_pred = _check_pair(y_true, y_pred, num_classes)
    return np.bincount(y_true * num_classes + y_pred, minlength=num_classes**2).reshape(
        num_classes, num_classes
    )


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Share of cases predicted right: ``sklearn.metrics.accuracy_score``."""
    y_true = _check_labels(y_true, name="y_true")
    y_pred = _check_labels(y_pred, name="y_pred")
    if y_true.shape != y_pred.shape:
        raise BadInputError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in length")
    return float(sklearn_metrics().accuracy_score(y_true, y_pred))


def per_class_recall(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> list[float | None]:
    """Recall of each class; ``None`` for a class with no true case (undefined)."""
    cm = confusion_matrix(y_true, y_pred, num_classes)
    support = cm.sum(axis=1)
    return [float(cm[c, c] / support[c]) if support[c] else None for c in range(num_classes)]


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """Mean recall over the classes present in ``y_true`` (absent classes skipped)."""
    recalls = [r for r in per_class_recall(y_true, y_pred, num_classes) if r is not None]
    return float(np.mean(recalls))


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """Unweighted mean F1 over the classes that occur in ``y_true`` or ``y_pred``:
    ``sklearn.metrics.f1_score(average="macro", zero_division=0)``.

    A class that is neither present nor predicted has no F1 and is skipped; a
    class present but never predicted (or predicted but absent) scores 0.
    """
    y_true, y_pred = _check_pair(y_true, y_pred, num_classes)
    return float(sklearn_metrics().f1_score(y_true, y_pred, average="macro", zero_division=0))


def macro_f1_from_confusion(cm: np.ndarray) -> float:
    """:func:`macro_f1` of a (C, C) confusion matrix (rows true, columns predicted)."""
    tp = np.diag(cm).astype(np.float64)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    seen = (support + predicted) > 0
    f1 = 2 * tp[seen] / (support[seen] + predicted[seen])
    return float(f1.mean())
