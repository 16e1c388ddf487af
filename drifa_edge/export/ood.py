"""Fit the OOD density of an artifact (``drifa-edge calibrate-ood``): class-conditional
Gaussians with a shared covariance (Lee et al., NeurIPS 2018) on the MC-mean pooled
features of the training split, a threshold on the validation split for a target
false-referral rate, written to ``ood.npz`` beside the weights and hashed in the card.

A site can keep the density and refit only the threshold on its own normal cases
(``threshold_only``): scanners differ. Scoring lives in :mod:`drifa_edge.inference.ood`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from drifa_edge.artifact.card import ModelCard
from drifa_edge.artifact.ood import SPACES, TaskDensity, read_ood, write_ood
from drifa_edge.data.splits import SPLITS
from drifa_edge.drift.check import load_split
from drifa_edge.errors import ArtifactError, BadInputError, ConfigError
from drifa_edge.inference.engine import EngineConfig, run_member_embedding
from drifa_edge.inference.ood import single_member
from drifa_edge.inference.predictor import choose_runtime, open_members
from drifa_edge.metrics.mahalanobis import fit_class_gaussians, mahalanobis_scores
from drifa_edge.metrics.uncertainty import fit_referral_threshold
from drifa_edge.progress import stage
from drifa_edge.runtimes.base import Runtime, RuntimeOptions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OodConfig:
    """How ``calibrate-ood`` fits: feature ``space``, ``target_rate`` (the share of
    in-distribution validation cases flagged), covariance ``shrinkage``, MC ``samples``
    per case, ``limit`` cases per split; ``threshold_only`` keeps the fitted density and
    refits the threshold on the given cases (a site's own normal cases, all of them)."""

    space: str = "branch"
    target_rate: float = 0.05
    shrinkage: float = 0.1
    samples: int = 30  # the score depends on T (MC noise averages out): fit with predict's T
    limit: int | None = None
    threshold_only: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.space not in SPACES:
            raise ConfigError(f"--space must be one of {SPACES}, got {self.space!r}")
        if not 0.0 < self.target_rate < 1.0:
            raise ConfigError(f"--target-rate must be in (0, 1), got {self.target_rate}")
        if not 0.0 <= self.shrinkage < 1.0:
            raise ConfigError(f"--shrinkage must be in [0, 1), got {self.shrinkage}")
        if self.samples < 1:
            raise ConfigError(f"--samples must be >= 1, got {self.samples}")


def task_columns(card: ModelCard, task: str, space: str) -> tuple[int, int]:
    """[start, stop) of ``task``'s features in the (B, M*W3) embedding."""
    width = card.model.stage_widths[-1]
    if space == "fused":
        return 0, width * len(card.task_names)
    k = card.task_names.index(task)
    return k * width, (k + 1) * width


def embed_split(runtime: Runtime, data: Sequence[str], split: str, cfg: OodConfig):
    """(MC-mean embedding (N, M*W3), labels {task: (N,)} with -1 for repeated rows) of one split."""
    stage(f"OOD: reading the {split} split")
    images, labels, _ = load_split(data, runtime.card, split, cfg.limit)
    cases = len(next(iter(labels.values()))) if labels else 0
    stage(f"OOD: MC-mean embedding of {cases} {split} cases, T={cfg.samples} ({runtime.name})")
    engine = EngineConfig(samples=cfg.samples, seed=cfg.seed)
    _, embedding = run_member_embedding(runtime, images, engine)
    return embedding, labels


def _embed_all(runtime: Runtime, data: Sequence[str], cfg: OodConfig) -> tuple[np.ndarray, dict]:
    """(MC-mean embedding, labels per task with -1 for repeated rows) of every split the data has."""
    parts, labels = [], []
    for split in SPLITS:
        try:
            emb, lab = embed_split(runtime, data, split, cfg)
        except BadInputError as e:  # an empty split
            log.info("no %s cases for the threshold refit: %s", split, e)
            continue
        parts.append(emb)
        labels.append(lab)
    if not parts:
        raise BadInputError(f"no readable cases in {list(data)} to refit the OOD threshold")
    return np.concatenate(parts), {t: np.concatenate([lab[t] for lab in labels]) for t in labels[0]}


def fit_densities(
    runtime: Runtime, data: Sequence[str], cfg: OodConfig, old: dict[str, TaskDensity] | None = None
) -> dict[str, TaskDensity]:
    """Fit per task on the 'train' split and pick the threshold on 'val' (or, with
    ``threshold_only``, keep ``old`` and pick the threshold on every given case)."""
    card = runtime.card
    if cfg.threshold_only:
        if old is None:
            raise ArtifactError("--threshold-only needs an artifact that already has ood.npz")
        emb, labels = _embed_all(runtime, data, cfg)
        out = {}
        for task, d in old.items():
            keep = labels[task] >= 0  # a row that repeats a shorter set's image counts once
            scores = mahalanobis_scores(d.select(emb[keep]), d.means, d.precision)
            fit = dict(d.fit, threshold_cases=int(keep.sum()), threshold_split="all (site refit)")
            out[task] = _replace_threshold(
                d, fit_referral_threshold(scores, cfg.target_rate), cfg.target_rate, fit
            )
        return out
    train, train_labels = embed_split(runtime, data, "train", cfg)
    val, val_labels = embed_split(runtime, data, "val", cfg)
    out = {}
    for task in card.task_names:
        cols = task_columns(card, task, cfg.space)
        x = train[:, cols[0] : cols[1]]
        classes, means, precision = fit_class_gaussians(x, train_labels[task], cfg.shrinkage)
        keep = val_labels[task] >= 0
        scores = mahalanobis_scores(val[keep, cols[0] : cols[1]], means, precision)
        fit = {
            "fit_split": "train",
            "fit_cases": int((train_labels[task] >= 0).sum()),
            "threshold_split": "val",
            "threshold_cases": int(keep.sum()),
            "shrinkage": cfg.shrinkage,
            "samples": cfg.samples,
            "score": "min_c (x - mu_c)^T Sigma^-1 (x - mu_c), Lee et al. 2018",
        }
        out[task] = TaskDensity(
            cfg.space, cols, classes, means, precision, fit_referral_threshold(scores, cfg.target_rate),
            cfg.target_rate, fit,
        )  # fmt: skip
    return out


def _replace_threshold(d: TaskDensity, threshold: float, rate: float, fit: dict[str, Any]) -> TaskDensity:
    return TaskDensity(d.space, d.columns, d.classes, d.means, d.precision, threshold, rate, fit)


def calibrate_ood(
    artifact: str | Path,
    data: Sequence[str],
    cfg: OodConfig | None = None,
    runtime: str = "auto",
    options: RuntimeOptions | None = None,
) -> dict[str, TaskDensity]:
    """Fit the OOD density of ``artifact`` (checkpoint or export folder) on labelled ``data``
    (``NAME=PATH`` per task) and write ``ood.npz`` beside its weights, hashed in the card.
    A checkpoint's density is copied into every later export."""
    cfg = cfg or OodConfig()
    member = single_member(Path(artifact))
    options = options or RuntimeOptions()
    (rt,) = open_members(member, choose_runtime(member, runtime, options.precision), options)
    try:
        densities = fit_densities(rt, data, cfg, read_ood(member) if cfg.threshold_only else None)
    finally:
        rt.close()
    write_ood(member, densities)
    return densities
