"""The statistics libraries behind the gate's metrics, imported on first use: ``scipy.stats``
(ranks, Spearman) and ``sklearn.metrics`` (accuracy, F1, NLL, Brier, AUROC, AUPR). Both come
with the ``[check]`` extra; the edge install (numpy + one runtime) never needs them, since
its uncertainty functions (:mod:`drifa_edge.metrics.uncertainty`) are numpy only."""

from __future__ import annotations

from types import ModuleType

from drifa_edge.errors import missing_dependency


def scipy_stats() -> ModuleType:
    try:
        import scipy.stats
    except ImportError as e:
        raise missing_dependency("scipy", "check") from e
    return scipy.stats


def sklearn_metrics() -> ModuleType:
    try:
        import sklearn.metrics
    except ImportError as e:
        raise missing_dependency("scikit-learn", "check") from e
    return sklearn.metrics
