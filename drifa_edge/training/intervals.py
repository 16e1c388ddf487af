"""95 % confidence intervals for test metrics (118 test cases give about +-9 points).

- accuracy: Wilson score interval of k correct out of n
  (``scipy.stats.binomtest(k, n).proportion_ci(method="wilson")``); good coverage
  at small n and near 0 or 1, where the normal approximation fails;
- balanced accuracy, macro-F1, ECE: percentile bootstrap over cases
  (``scipy.stats.bootstrap`` on case indices, ``n_resamples`` seeded resamples);
  a resample in which a class is absent skips it (balanced accuracy, macro-F1:
  the conventions of ``drifa_edge.metrics``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from drifa_edge.errors import BadInputError

CONFIDENCE = 0.95
RESAMPLES = 1000
ECE_BINS = 15  # as drifa_edge.metrics.task_metrics


def wilson_interval(correct: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    from scipy.stats import binomtest

    if n < 1 or not 0 <= correct <= n:
        raise BadInputError(f"Wilson interval needs 0 <= correct <= n and n >= 1, got {correct}/{n}")
    ci = binomtest(int(correct), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def bootstrap_interval(
    statistic, n: int, *, confidence: float = CONFIDENCE, resamples: int = RESAMPLES, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(indices)`` over n cases."""
    from scipy.stats import bootstrap

    if n < 2:
        raise BadInputError(f"a bootstrap interval needs at least 2 cases, got {n}")
    result = bootstrap(
        (np.arange(n),),
        lambda idx: statistic(np.asarray(idx, dtype=np.int64)),
        vectorized=False,
        n_resamples=resamples,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def metric_intervals(
    probs: np.ndarray, labels: np.ndarray, *, seed: int = 0, resamples: int = RESAMPLES
) -> dict[str, Any]:
    """Intervals of one task: ``probs`` (N, C) MC-mean probabilities, ``labels`` (N,) in [0, C)
    (unscored rows already dropped). Returns {metric: {"low", "high", "method"}}."""
    from drifa_edge.metrics import balanced_accuracy, ece, macro_f1

    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if probs.ndim != 2 or probs.shape[0] != labels.shape[0]:
        raise BadInputError(f"probs {probs.shape} and labels {labels.shape} do not match")
    c = probs.shape[1]
    pred = probs.argmax(axis=1)
    n = labels.size
    low, high = wilson_interval(int((pred == labels).sum()), n)
    out = {"accuracy": {"low": low, "high": high, "method": f"Wilson {CONFIDENCE:.0%}"}}
    stats = {
        "balanced_accuracy": lambda i: balanced_accuracy(labels[i], pred[i], c),
        "macro_f1": lambda i: macro_f1(labels[i], pred[i], c),
        "ece": lambda i: ece(probs[i], labels[i], ECE_BINS),
    }
    for name, fn in stats.items():
        low, high = bootstrap_interval(fn, n, seed=seed, resamples=resamples)
        out[name] = {
            "low": low,
            "high": high,
            "method": f"percentile bootstrap {CONFIDENCE:.0%}, {resamples} resamples",
        }
    return out
