"""Fit the OOD density of an artifact (``drifa-edge calibrate-ood``): class-conditional
Gaussians with a shared covariance (Lee et al., NeurIPS 2018) on the training split's
pooled prefix statistics and MC-mean embedding (see :mod:`drifa_edge.inference.ood`), the
two scores' standardisation and a threshold on the validation split for a target
false-referral rate, written to ``ood.npz`` beside the weights and hashed in the card.

A site can keep the density and refit only the threshold on its own normal cases
(``threshold_only``): scanners differ. Scoring lives in :mod:`drifa_edge.inference.ood`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from drifa_edge.artifact.card import ModelCard
from drifa_edge.artifact.ensemble import resolve_members
from drifa_edge.artifact.ood import SPACES, PrefixDensity, TaskDensity, read_ood, write_ood
from drifa_edge.data.splits import SPLITS
from drifa_edge.drift.check import load_split
from drifa_edge.errors import ArtifactError, BadInputError, ConfigError
from drifa_edge.inference.engine import EngineConfig, run_member_embedding
from drifa_edge.inference.manifest import case_seed
from drifa_edge.inference.ood import run_prefix_statistics, task_score
from drifa_edge.inference.predictor import choose_runtime, open_members
from drifa_edge.metrics.mahalanobis import fit_class_gaussians, mahalanobis_scores
from drifa_edge.metrics.uncertainty import fit_referral_threshold
from drifa_edge.progress import stage
from drifa_edge.runtimes.base import Runtime, RuntimeOptions

log = logging.getLogger(__name__)


SCORES = ("prefix+embedding", "embedding")
SCORE_TEXT = {
    "embedding": "min_c (x - mu_c)^T Sigma^-1 (x - mu_c) of the MC-mean embedding, Lee et al. 2018",
    "prefix+embedding": "sum of the Mahalanobis scores of the prefix statistics and of the MC-mean "
    "embedding, each standardised by its val mean and std (Lee et al. 2018 feature ensemble, equal weights)",
}


@dataclass(frozen=True)
class OodConfig:
    """How ``calibrate-ood`` fits: feature ``space``, ``target_rate`` (the share of
    in-distribution validation cases flagged), covariance ``shrinkage``, MC ``samples``
    per case, ``limit`` cases per split; ``threshold_only`` keeps the fitted density and
    refits the threshold on the given cases (a site's own normal cases, all of them)."""

    space: str = "branch"
    score: str = "prefix+embedding"
    target_rate: float = 0.05
    shrinkage: float = 0.1
    samples: int = 30  # the score depends on T (MC noise averages out): fit with predict's T
    limit: int | None = None
    threshold_only: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.space not in SPACES:
            raise ConfigError(f"--space must be one of {SPACES}, got {self.space!r}")
        if self.score not in SCORES:
            raise ConfigError(f"--score must be one of {SCORES}, got {self.score!r}")
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


def split_case_seeds(runtime: Runtime, split: str, row_ids: Sequence[str], seed: int) -> list[int] | None:
    """One mask stream per row, keyed by split and row id (as predict keys a case by its id),
    where the runtime is seedable; None (its own fresh in-graph stream) where it is not.

    Why: one stream restarted from ``seed`` for every split gave row i of 'val' the masks of
    row i of 'train'. A density fitted with N ~ D rows has inflated variance along its own
    rows' noise, so mask-sharing rows scored ~30 % lower than fresh ones (measured on the
    tiny test model): a threshold set too low, more false referrals in predict than the
    target, and the 'torch vs ONNX Runtime' gap seen with MC on (the in-graph runtimes never
    restart their stream, so they never shared masks)."""
    if not getattr(runtime, "seedable", False):
        return None
    return [case_seed(seed, f"{split}/{row}") for row in row_ids]


@dataclass(frozen=True)
class SplitFeatures:
    """One split's OOD features: MC-mean ``embedding`` (N, M*W3), ``prefix`` statistics
    {task: (N, 2 * W0)}, ``labels`` {task: (N,)} with -1 for rows repeating a shorter set's image."""

    embedding: np.ndarray
    prefix: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]


def embed_split(runtime: Runtime, data: Sequence[str], split: str, cfg: OodConfig) -> SplitFeatures:
    """The OOD features of one split (each row on its own mask stream, see split_case_seeds)."""
    stage(f"OOD: reading the {split} split")
    images, labels, row_ids = load_split(data, runtime.card, split, cfg.limit)
    cases = len(next(iter(labels.values()))) if labels else 0
    stage(f"OOD: MC-mean embedding of {cases} {split} cases, T={cfg.samples} ({runtime.name})")
    engine = EngineConfig(samples=cfg.samples, seed=cfg.seed)
    seeds = split_case_seeds(runtime, split, row_ids, cfg.seed)
    _, embedding = run_member_embedding(runtime, images, engine, case_seeds=seeds)
    prefix = dict(zip(runtime.card.task_names, run_prefix_statistics(runtime, images), strict=True))
    return SplitFeatures(embedding, prefix, labels)


def _embed_all(runtime: Runtime, data: Sequence[str], cfg: OodConfig) -> SplitFeatures:
    """The OOD features of every split the data has, concatenated."""
    parts = []
    for split in SPLITS:
        try:
            parts.append(embed_split(runtime, data, split, cfg))
        except BadInputError as e:  # an empty split
            log.info("no %s cases for the threshold refit: %s", split, e)
    if not parts:
        raise BadInputError(f"no readable cases in {list(data)} to refit the OOD threshold")
    tasks = list(parts[0].labels)
    return SplitFeatures(
        np.concatenate([p.embedding for p in parts]),
        {t: np.concatenate([p.prefix[t] for p in parts]) for t in tasks},
        {t: np.concatenate([p.labels[t] for p in parts]) for t in tasks},
    )


def fit_densities(
    runtime: Runtime, data: Sequence[str], cfg: OodConfig, old: dict[str, TaskDensity] | None = None
) -> dict[str, TaskDensity]:
    """Fit per task on the 'train' split and pick the threshold on 'val' (or, with
    ``threshold_only``, keep ``old`` and pick the threshold on every given case)."""
    card = runtime.card
    if cfg.threshold_only:
        if old is None:
            raise ArtifactError("--threshold-only needs an artifact that already has ood.npz")
        every = _embed_all(runtime, data, cfg)
        out = {}
        for task, d in old.items():
            keep = every.labels[task] >= 0  # a row that repeats a shorter set's image counts once
            scores = task_score(d, every.embedding[keep], every.prefix[task][keep])
            fit = dict(d.fit, threshold_cases=int(keep.sum()), threshold_split="all (site refit)")
            out[task] = replace(
                d,
                threshold=fit_referral_threshold(scores, cfg.target_rate),
                target_rate=cfg.target_rate,
                fit=fit,
            )
        return out
    train = embed_split(runtime, data, "train", cfg)
    val = embed_split(runtime, data, "val", cfg)
    out = {}
    for task in card.task_names:
        cols = task_columns(card, task, cfg.space)
        classes, means, precision = fit_class_gaussians(
            train.embedding[:, cols[0] : cols[1]], train.labels[task], cfg.shrinkage
        )
        keep = val.labels[task] >= 0
        fit = {
            "fit_split": "train",
            "fit_cases": int((train.labels[task] >= 0).sum()),
            "threshold_split": "val",
            "threshold_cases": int(keep.sum()),
            "shrinkage": cfg.shrinkage,
            "samples": cfg.samples,
            "score": SCORE_TEXT[cfg.score],
        }
        d = TaskDensity(cfg.space, cols, classes, means, precision, 0.0, cfg.target_rate, fit)
        if cfg.score == "prefix+embedding":
            d = replace(d, prefix=_fit_prefix(d, train, val, task, cfg.shrinkage))
        scores = task_score(d, val.embedding[keep], val.prefix[task][keep])
        out[task] = replace(d, threshold=fit_referral_threshold(scores, cfg.target_rate))
    return out


def _fit_prefix(
    d: TaskDensity, train: SplitFeatures, val: SplitFeatures, task: str, shrinkage: float
) -> PrefixDensity:
    """The prefix part of ``task``'s density, and the val mean / std of both parts' scores."""
    _, means, precision = fit_class_gaussians(train.prefix[task], train.labels[task], shrinkage)
    keep = val.labels[task] >= 0
    sp = mahalanobis_scores(val.prefix[task][keep], means, precision)
    se = mahalanobis_scores(d.select(val.embedding[keep]), d.means, d.precision)
    if len(sp) < 2 or not (sp.std() > 0 and se.std() > 0):
        raise BadInputError(
            f"task {task!r}: {len(sp)} validation cases with constant OOD scores cannot standardise "
            "the prefix and embedding parts; give more 'val' cases or use --score embedding"
        )
    return PrefixDensity(
        means, precision, float(sp.mean()), float(sp.std()), float(se.mean()), float(se.std())
    )


def calibrate_ood(
    artifact: str | Path,
    data: Sequence[str],
    cfg: OodConfig | None = None,
    runtime: str = "auto",
    options: RuntimeOptions | None = None,
) -> list[dict[str, TaskDensity]]:
    """Fit the OOD density of ``artifact`` (checkpoint or export folder, one model or an
    ensemble) on labelled ``data`` (``NAME=PATH`` per task) and write ``ood.npz`` beside
    the weights, hashed in the card; one list entry per model (ensemble: every member,
    member k with seed ``cfg.seed + k`` as the engine runs it). A checkpoint's density is
    copied into every later export."""
    cfg = cfg or OodConfig()
    options = options or RuntimeOptions()
    out = []
    for k, member in enumerate(resolve_members(Path(artifact))):
        member_cfg = replace(cfg, seed=cfg.seed + k)
        (rt,) = open_members(member, choose_runtime(member, runtime, options.precision), options)
        try:
            old = read_ood(member) if cfg.threshold_only else None
            densities = fit_densities(rt, data, member_cfg, old)
        finally:
            rt.close()
        write_ood(member, densities)
        out.append(densities)
    return out
