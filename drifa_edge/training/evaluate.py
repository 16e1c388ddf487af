"""Final evaluation of a trained checkpoint (or ensemble) with MC dropout, through the engine.

The best checkpoint is opened in the torch runtime exactly as ``drifa-edge predict``
would open it (hashes verified, BatchNorm in eval, MC dropout on), T samples per
case are drawn by the engine, then per task: the temperature and the referral
threshold (mutual information, ``referral_rate`` of the validation cases) are fitted
on the validation split, and the metrics of validation and test are computed at
that temperature (``drifa_edge.metrics.task_metrics``: accuracy, macro-F1, NLL, ECE, ...).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from drifa_edge.artifact.card import ModelCard, ReferralRule
from drifa_edge.inference.engine import EngineConfig, run_mc_logits, softmax
from drifa_edge.runtimes.base import RuntimeOptions, open_runtime
from drifa_edge.training.config import TrainConfig
from drifa_edge.training.data import TrainingData

log = logging.getLogger(__name__)

REFERRAL_METRIC = "mutual_information"
SUMMARY_KEYS = ("accuracy", "macro_f1", "balanced_accuracy", "nll", "ece", "mean_mutual_information")


def mc_logits(runtimes: Sequence, data: TrainingData, split: str, cfg: TrainConfig):
    """Raw MC logits per task (N, K*T, C) and labels per task (N,), -1 = not scored."""
    xs, ys = data.eval_rows(split)
    logits = run_mc_logits(runtimes, xs, EngineConfig(samples=cfg.mc_samples, seed=cfg.seed))
    return logits, dict(zip(data.names, ys, strict=True))


def member_probs(logits: np.ndarray, temperatures: Sequence[float]) -> np.ndarray:
    """(N, K*T, C) logits of K members -> probabilities, each member at its own temperature."""
    parts = np.split(logits, len(temperatures), axis=1)
    return np.concatenate([softmax(p, t) for p, t in zip(parts, temperatures, strict=True)], axis=1)


def calibrate(logits: dict[str, np.ndarray], labels: dict[str, np.ndarray], cfg: TrainConfig) -> dict:
    """Per task {"temperature", "threshold"} fitted on validation MC logits of one member."""
    from drifa_edge.metrics.temperature import fit_calibration

    return fit_calibration(logits, labels, target_rate=cfg.referral_rate, referral_metric=REFERRAL_METRIC)


def fit_thresholds(
    probs: dict[str, np.ndarray], labels: dict[str, np.ndarray], rate: float
) -> dict[str, float]:
    """Referral threshold per task on the scored validation rows of given probabilities."""
    from drifa_edge.metrics.uncertainty import fit_referral_threshold, summarize

    out = {}
    for task, p in probs.items():
        keep = labels[task] >= 0
        out[task] = fit_referral_threshold(summarize(p[keep])[REFERRAL_METRIC], rate)
    return out


def split_metrics(
    probs: dict[str, np.ndarray], labels: dict[str, np.ndarray], thresholds: dict[str, float]
) -> dict[str, dict[str, Any]]:
    from drifa_edge.metrics import task_metrics

    return {
        task: task_metrics(p, labels[task], thresholds[task], referral_metric=REFERRAL_METRIC)
        for task, p in probs.items()
    }


def evaluate_checkpoint(folder: Path, data: TrainingData, cfg: TrainConfig) -> ModelCard:
    """MC evaluation of one checkpoint; returns its card with temperature, referral and metrics."""
    runtime = open_runtime("torch", folder, RuntimeOptions(threads=cfg.threads))
    try:
        val_logits, val_labels = mc_logits([runtime], data, "val", cfg)
        test_logits, test_labels = mc_logits([runtime], data, "test", cfg)
    finally:
        runtime.close()
    card = runtime.card
    fitted = calibrate(val_logits, val_labels, cfg)
    temps = {t: float(f["temperature"]) for t, f in fitted.items()}
    thresholds = {t: float(f["threshold"]) for t, f in fitted.items()}
    val_probs = {t: member_probs(z, [temps[t]]) for t, z in val_logits.items()}
    test_probs = {t: member_probs(z, [temps[t]]) for t, z in test_logits.items()}
    metrics = {
        "val": split_metrics(val_probs, val_labels, thresholds),
        "test": split_metrics(test_probs, test_labels, thresholds),
        "evaluation": {
            "mc_samples": cfg.mc_samples,
            "seed": cfg.seed,
            "runtime": "torch fp32",
            "temperature_fitted_on": "val",
            "referral_fitted_on": "val",
        },
    }
    add_intervals(metrics["test"], test_probs, test_labels, cfg.seed)
    referral = {
        t: ReferralRule(metric=REFERRAL_METRIC, threshold=thresholds[t], target_rate=cfg.referral_rate)
        for t in thresholds
    }
    training = {**card.training, "chance": chance_report(val_probs, val_labels, cfg.seed)}
    return card.replace(temperature=temps, referral=referral, metrics=metrics, training=training)


def _mean_scored(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MC samples (N, S, C) -> mean probabilities (n, C) and labels (n,) of the scored rows."""
    keep = labels >= 0
    return probs[keep].mean(axis=1), labels[keep]


def add_intervals(
    metrics: dict[str, dict], probs: dict[str, np.ndarray], labels: dict[str, np.ndarray], seed: int
) -> None:
    """Write 95 % intervals (:mod:`drifa_edge.training.intervals`) into each task's metrics as ``ci``."""
    from drifa_edge.training.intervals import metric_intervals

    for task, p in probs.items():
        mean, y = _mean_scored(p, labels[task])
        metrics[task]["ci"] = metric_intervals(mean, y, seed=seed)


def chance_report(probs: dict[str, np.ndarray], labels: dict[str, np.ndarray], seed: int) -> dict[str, Any]:
    """:func:`drifa_edge.training.chance.chance_test` of every task's MC-mean predictions on
    the validation split; the ``training.chance`` section of the model card."""
    from drifa_edge.training.chance import ALPHA, PERMUTATIONS, chance_test

    tasks = {}
    for task, p in probs.items():
        mean, y = _mean_scored(p, labels[task])
        tasks[task] = chance_test(y, mean.argmax(axis=1), mean.shape[1], seed=seed).to_dict()
    return {
        "split": "val",
        "predictions": "MC-mean probabilities at the fitted temperature, argmax",
        "method": (
            "accuracy vs majority-class rate: exact one-sided binomial test (scipy.stats.binomtest); "
            f"balanced accuracy vs a label-permutation null ({PERMUTATIONS} permutations); "
            f"at chance when neither rejects at alpha/2 = {ALPHA / 2:g} (Bonferroni)"
        ),
        "tasks": tasks,
        "at_chance": [t for t, r in tasks.items() if r["at_chance"]],
    }


def evaluate_members(folders: Sequence[Path], data: TrainingData, cfg: TrainConfig) -> dict[str, Any]:
    """MC evaluation of an ensemble (each member at its own card temperature); the
    referral threshold is refitted for the ensemble's K*T samples on validation."""
    runtimes = [open_runtime("torch", f, RuntimeOptions(threads=cfg.threads)) for f in folders]
    try:
        temps = {t: [rt.card.temperature_of(t) for rt in runtimes] for t in data.names}
        val_logits, val_labels = mc_logits(runtimes, data, "val", cfg)
        test_logits, test_labels = mc_logits(runtimes, data, "test", cfg)
    finally:
        for rt in runtimes:
            rt.close()
    val_probs = {t: member_probs(z, temps[t]) for t, z in val_logits.items()}
    test_probs = {t: member_probs(z, temps[t]) for t, z in test_logits.items()}
    thresholds = fit_thresholds(val_probs, val_labels, cfg.referral_rate)
    test_metrics = split_metrics(test_probs, test_labels, thresholds)
    add_intervals(test_metrics, test_probs, test_labels, cfg.seed)
    return {
        "chance": chance_report(val_probs, val_labels, cfg.seed),
        "referral": {
            t: ReferralRule(REFERRAL_METRIC, thresholds[t], cfg.referral_rate).to_dict() for t in thresholds
        },
        "metrics": {
            "val": split_metrics(val_probs, val_labels, thresholds),
            "test": test_metrics,
            "evaluation": {
                "mc_samples_per_member": cfg.mc_samples,
                "members": len(folders),
                "seed": cfg.seed,
            },
        },
    }


def summary(metrics: dict[str, Any], split: str = "test") -> dict[str, dict[str, float]]:
    """The headline numbers per task of one split (for tables and logs)."""
    return {task: {k: m[k] for k in SUMMARY_KEYS if k in m} for task, m in metrics.get(split, {}).items()}
