"""Simulated MC draws with known probabilities for the stopping-rule tests: logistic-normal
draws p_s = softmax(mu + sigma * z_s), z_s ~ N(0, I), and the sequential loop of the engine
(T_min, then blocks, up to T_max) run on them in numpy."""

from __future__ import annotations

import numpy as np

from drifa_edge.inference.adaptive import AdaptiveConfig
from drifa_edge.metrics.sequential import Referral, settled


def logistic_normal(rng: np.random.Generator, mu, sigma: float, shape: tuple[int, ...]) -> np.ndarray:
    mu = np.asarray(mu, dtype=np.float64)
    z = mu + sigma * rng.standard_normal((*shape, mu.size))
    z -= z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def entropy(p: np.ndarray) -> np.ndarray:
    return -(p * np.log(np.clip(p, 1e-12, 1.0))).sum(axis=-1)


def mutual_information(p: np.ndarray) -> np.ndarray:
    """Plug-in MI over axis -2 of (..., n, C)."""
    return np.maximum(entropy(p.mean(axis=-2)) - entropy(p).mean(axis=-1), 0.0)


def truth(rng: np.random.Generator, mu, sigma: float, draws: int = 400_000) -> tuple[int, float]:
    """(argmax of E p, MI) of the draw distribution, from ``draws`` draws (independent of the rule)."""
    p = logistic_normal(rng, mu, sigma, (draws,))
    return int(p.mean(axis=0).argmax()), float(mutual_information(p))


def simulate(draws: np.ndarray, referral: Referral, cfg: AdaptiveConfig):
    """The engine's look loop on pre-drawn samples (reps, T_max, C) of one task:
    (draws used per rep, predicted class at the stop, referred at the stop, stopped early)."""
    reps, t_max, _ = draws.shape
    looks = cfg.looks(t_max)
    used = np.full(reps, t_max)
    active = np.ones(reps, dtype=bool)
    for n in looks[:-1]:
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        done = settled(
            {"t": draws[idx, :n]}, {"t": referral}, max_samples=t_max, rule=cfg.rule,
            error_rate=cfg.error_rate, tolerance=cfg.se_tolerance,
        )  # fmt: skip
        used[idx[done]] = n
        active[idx[done]] = False
    mask = np.arange(t_max)[None, :] < used[:, None]  # (reps, T)
    mean = (draws * mask[..., None]).sum(axis=1) / used[:, None]
    eh = (entropy(draws) * mask).sum(axis=1) / used
    mi = np.maximum(entropy(mean) - eh, 0.0)
    return used, mean.argmax(axis=1), mi > referral.threshold, used < t_max
