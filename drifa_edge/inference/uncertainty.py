"""Uncertainty from MC samples: pure numpy, no I/O.

For samples p_s (S x C) of one case, with H the entropy in nats:
- predictive entropy  H[mean_s p_s]        (total uncertainty)
- expected entropy    mean_s H[p_s]        (aleatoric)
- mutual information  H[mean p] - mean H[p] (epistemic, >= 0 by Jensen)
"""

from __future__ import annotations

import numpy as np

from drifa_edge.errors import BadInputError

_EPS = 1e-12


def entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    """Shannon entropy in nats; 0 * log 0 is taken as 0."""
    p = np.asarray(p, dtype=np.float64)
    return -(p * np.log(np.clip(p, _EPS, 1.0))).sum(axis=axis)


def summarize(samples: np.ndarray) -> dict[str, np.ndarray]:
    """Per-case statistics of MC samples shaped (B, S, C)."""
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim != 3 or samples.shape[1] < 1:
        raise BadInputError(f"MC samples must be shaped (cases, samples, classes), got {samples.shape}")
    if not np.isfinite(samples).all():
        raise BadInputError("MC samples contain NaN or Inf")
    mean = samples.mean(axis=1)  # (B, C)
    predictive = entropy(mean)
    expected = entropy(samples).mean(axis=1)
    mi = np.maximum(predictive - expected, 0.0)  # clip float round-off below zero
    return {
        "mean": mean,
        "std": samples.std(axis=1, ddof=1) if samples.shape[1] > 1 else np.zeros_like(mean),
        "predicted": mean.argmax(axis=1),
        "confidence": mean.max(axis=1),
        "predictive_entropy": predictive,
        "expected_entropy": expected,
        "mutual_information": mi,
    }


def fit_referral_threshold(scores: np.ndarray, target_rate: float) -> float:
    """Threshold such that about ``target_rate`` of cases have a score above it."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        raise BadInputError("cannot fit a referral threshold on zero cases")
    if not 0.0 <= target_rate < 1.0:
        raise BadInputError(f"target referral rate must be in [0, 1), got {target_rate}")
    if target_rate == 0.0:
        return float(scores.max())
    return float(np.quantile(scores, 1.0 - target_rate))


def refer(scores: np.ndarray, threshold: float) -> np.ndarray:
    """True where a case should go to a human (score strictly above threshold)."""
    return np.asarray(scores) > threshold
