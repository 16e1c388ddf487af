"""Uncertainty from MC samples: pure numpy, no I/O.

For samples p_s (S x C) of one case, with H the entropy in nats:
- predictive entropy  H[mean_s p_s]        (total uncertainty)
- expected entropy    mean_s H[p_s]        (aleatoric)
- mutual information  H[mean p] - mean H[p] (epistemic, >= 0 by Jensen)

The per-class standard deviation is the sample one (ddof=1) over the S samples,
0 when S == 1. A referral score is one of :data:`REFERRAL_METRICS`, larger
meaning more uncertain; a case is referred when its score is strictly above the
threshold fitted on validation data for a target referral rate (1 - coverage).
"""

from __future__ import annotations

from typing import TypedDict

import numpy as np

from drifa_edge.artifact.card import REFERRAL_METRICS
from drifa_edge.errors import BadInputError, ConfigError, ProbabilityError, suggest

_EPS = 1e-12


class McSummary(TypedDict):
    """Per-case statistics of MC samples (B, S, C): arrays of shape (B, C) or (B,)."""

    mean: np.ndarray  # (B, C) mean probability over the S samples
    std: np.ndarray  # (B, C) sample standard deviation (ddof=1), 0 when S == 1
    predicted: np.ndarray  # (B,) argmax of the mean
    confidence: np.ndarray  # (B,) max of the mean
    predictive_entropy: np.ndarray  # (B,) nats
    expected_entropy: np.ndarray  # (B,) nats
    mutual_information: np.ndarray  # (B,) nats, >= 0
    least_confidence: np.ndarray  # (B,) 1 - confidence


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """softmax(logits / temperature) over the last axis, in float64 (max-subtracted, no overflow)."""
    z = logits.astype(np.float64) / float(temperature)
    z -= z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    """Shannon entropy in nats; 0 * log 0 is taken as 0."""
    p = np.asarray(p, dtype=np.float64)
    return -(p * np.log(np.clip(p, _EPS, 1.0))).sum(axis=axis)


def summarize(samples: np.ndarray, used: np.ndarray | None = None) -> McSummary:
    """Per-case statistics of MC samples shaped (B, S, C).

    ``used`` (B,) integers in [1, S]: case i's statistics come from its first ``used[i]``
    draws only (adaptive T: a case stopped early; its later draws are ignored)."""
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim != 3 or samples.shape[1] < 1:
        raise BadInputError(f"MC samples must be shaped (cases, samples, classes), got {samples.shape}")
    if not np.isfinite(samples).all():
        raise BadInputError("MC samples contain NaN or Inf")
    if samples.min() < 0 or samples.max() > 1 or not np.allclose(samples.sum(axis=-1), 1.0, atol=1e-4):
        raise ProbabilityError(
            f"MC samples must be probabilities (each row in [0, 1], summing to 1 within 1e-4); got values in "
            f"[{samples.min():.4g}, {samples.max():.4g}], row sums in "
            f"[{samples.sum(-1).min():.4g}, {samples.sum(-1).max():.4g}]; logits? apply softmax first"
        )
    if used is None:
        mean = samples.mean(axis=1)  # (B, C)
        expected = entropy(samples).mean(axis=1)
        std = samples.std(axis=1, ddof=1) if samples.shape[1] > 1 else np.zeros_like(mean)
    else:
        mean, expected, std = _first_draws(samples, used)
    predictive = entropy(mean)
    mi = np.maximum(predictive - expected, 0.0)  # clip float round-off below zero
    return {
        "mean": mean,
        "std": std,
        "predicted": mean.argmax(axis=1),
        "confidence": mean.max(axis=1),
        "predictive_entropy": predictive,
        "expected_entropy": expected,
        "mutual_information": mi,
        "least_confidence": 1.0 - mean.max(axis=1),
    }


def _first_draws(samples: np.ndarray, used: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean (B, C), mean entropy (B,) and sd (B, C) of each case's first ``used[i]`` draws."""
    cases, draws, _ = samples.shape
    used = np.asarray(used)
    if (
        used.shape != (cases,)
        or not np.issubdtype(used.dtype, np.integer)
        or used.min(initial=1) < 1
        or (used.max(initial=1) > draws)
    ):
        raise BadInputError(f"used must be ({cases},) integers in [1, {draws}], got {used!r}")
    mask = (np.arange(draws)[None, :] < used[:, None]).astype(np.float64)  # (B, S)
    n = used.astype(np.float64)
    mean = (samples * mask[..., None]).sum(axis=1) / n[:, None]
    expected = (entropy(samples) * mask).sum(axis=1) / n
    ss = (((samples - mean[:, None, :]) ** 2) * mask[..., None]).sum(axis=1)
    std = np.sqrt(np.divide(ss, (n - 1)[:, None], out=np.zeros_like(ss), where=(n > 1)[:, None]))
    return mean, expected, std


def referral_score(summary: McSummary, metric: str) -> np.ndarray:
    """Per-case score for ``metric`` from a :func:`summarize` result; larger = refer sooner."""
    if metric not in REFERRAL_METRICS:
        raise ConfigError(
            f"unknown referral metric {metric!r}; choose one of {REFERRAL_METRICS}"
            + suggest(metric, REFERRAL_METRICS)
        )
    return summary[metric]


def fit_referral_threshold(scores: np.ndarray, target_rate: float) -> float:
    """Threshold such that about ``target_rate`` of cases have a score above it."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        raise BadInputError("cannot fit a referral threshold on zero cases")
    if not np.isfinite(scores).all():
        raise BadInputError("referral scores contain NaN or Inf")
    if not 0.0 <= target_rate < 1.0:
        raise BadInputError(f"target referral rate must be in [0, 1), got {target_rate}")
    if target_rate == 0.0:
        return float(scores.max())
    return float(np.quantile(scores, 1.0 - target_rate))


def refer(scores: np.ndarray, threshold: float) -> np.ndarray:
    """True where a case should go to a human (score strictly above threshold)."""
    return np.asarray(scores) > threshold
