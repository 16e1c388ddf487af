"""Temperature scaling and referral thresholds, fitted on validation data (numpy; the search
for T uses ``scipy.optimize``, the ``[check]`` extra).

Temperature scaling divides every logit of a task by one scalar T > 0 fitted to
minimise the NLL of the MC-mean prediction mean_s softmax(z_s / T). It never
changes the predicted class of a single sample, only how confident the model
claims to be. An INT8 build shifts logits a little, so a candidate may be
refitted for its precision (``drifa-edge check --recalibrate``); the fitted values
are written into a model card by :func:`drifa_edge.artifact.card.apply_calibration`.
"""

from __future__ import annotations

import math

import numpy as np

from drifa_edge.errors import BadInputError, ConfigError, missing_dependency
from drifa_edge.metrics._checks import EPS, scored
from drifa_edge.metrics.uncertainty import fit_referral_threshold, softmax, summarize

T_MIN, T_MAX = 0.05, 20.0


def _as_samples(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim == 2:
        z = z[:, None, :]
    if z.ndim != 3 or z.shape[2] < 2:
        raise BadInputError(
            f"logits must be shaped (cases, classes) or (cases, samples, classes), got {z.shape}"
        )
    if not np.isfinite(z).all():
        raise BadInputError("logits contain NaN or Inf")
    labels = np.asarray(labels)
    if labels.shape != (z.shape[0],):
        raise BadInputError(f"{z.shape[0]} cases of logits but labels shaped {labels.shape}")
    keep = scored(labels)
    if not keep.any():
        raise BadInputError("cannot fit a temperature without a scored case (every label is -1)")
    labels = labels[keep].astype(np.int64)
    if labels.min() < 0 or labels.max() >= z.shape[2]:
        raise BadInputError(f"labels must lie in [0, {z.shape[2]}), got [{labels.min()}, {labels.max()}]")
    return z[keep], labels


def mc_nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """NLL of the MC-mean of softmax(logits / T); logits (N, S, C) or (N, C), labels -1 dropped."""
    z, y = _as_samples(logits, labels)
    p = softmax(z, temperature).mean(axis=1)[np.arange(y.size), y]
    return float(-np.mean(np.log(np.clip(p, EPS, 1.0))))


def fit_temperature(logits: np.ndarray, labels: np.ndarray, grid: int = 49, tol: float = 1e-4) -> float:
    """The T in [0.05, 20] that minimises :func:`mc_nll`.

    A log-spaced grid brackets the minimum (the MC-mean NLL need not be unimodal
    in T), then ``scipy.optimize.minimize_scalar`` (bounded Brent) refines log T
    within the bracket to ``tol``. The result is never worse than T = 1 on the
    fitting data: if the search cannot beat T = 1, 1.0 is returned. Needs the
    ``[check]`` extra (scipy).
    """
    try:
        from scipy.optimize import minimize_scalar
    except ImportError as e:
        raise missing_dependency("scipy", "check") from e
    z, y = _as_samples(logits, labels)

    def loss(log_t: float) -> float:
        p = softmax(z, math.exp(log_t)).mean(axis=1)[np.arange(y.size), y]
        return float(-np.mean(np.log(np.clip(p, EPS, 1.0))))

    points = np.linspace(math.log(T_MIN), math.log(T_MAX), grid)
    values = [loss(x) for x in points]
    best = int(np.argmin(values))
    lo, hi = points[max(best - 1, 0)], points[min(best + 1, grid - 1)]
    found = minimize_scalar(loss, bounds=(lo, hi), method="bounded", options={"xatol": tol})
    log_t, f_t = min(
        [(float(found.x), float(found.fun)), (points[best], values[best])], key=lambda pair: pair[1]
    )
    return float(math.exp(log_t)) if f_t < loss(0.0) else 1.0


def fit_calibration(
    logits: dict[str, np.ndarray],
    labels: dict[str, np.ndarray],
    target_rate: float,
    referral_metric: str = "mutual_information",
    temperatures: dict[str, float] | None = None,
) -> dict[str, dict[str, float]]:
    """Per task: the temperature (fitted unless given in ``temperatures``) and the
    referral threshold at that temperature for ``target_rate`` referrals.

    ``logits`` are raw MC logits (N, S, C) of one artifact on validation data;
    unscored rows (-1) are left out of both fits.
    """
    out: dict[str, dict[str, float]] = {}
    for task, z in logits.items():
        if task not in labels:
            raise ConfigError(f"no validation labels for task {task!r}; have {sorted(labels)}")
        zs, _ = _as_samples(z, labels[task])
        if temperatures is not None and task in temperatures:
            temperature = float(temperatures[task])
        else:
            temperature = fit_temperature(z, labels[task])
        stats = summarize(softmax(zs, temperature))
        if referral_metric not in stats:
            raise ConfigError(f"unknown referral metric {referral_metric!r}; choose one of {sorted(stats)}")
        threshold = fit_referral_threshold(stats[referral_metric], target_rate)
        out[task] = {"temperature": temperature, "threshold": threshold, "cases": int(zs.shape[0])}
    return out
