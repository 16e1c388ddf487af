"""The drift gate: is a candidate build (INT8, another runtime) as good as the reference?

Monte Carlo dropout makes two runs of the *same* model disagree, so every
uncertainty criterion is judged against the noise floor: the reference run a
second time with other dropout draws (``ref_again``). The candidate runs with the
reference's seed, so where both runtimes draw the same masks (torch vs torch) the
comparison is free of MC noise; where they cannot (ONNX Runtime, OpenVINO draw
in-graph), the noise floor says how much disagreement chance alone explains.
The criteria themselves are in :mod:`drifa_edge.drift.criteria`.

:func:`evaluate_drift` works on MC samples already computed (pure numpy);
:func:`drifa_edge.drift.check.run_check` (``drifa-edge check``) opens the
artifacts, loads the data, runs the engine and calls it. Neither raises on a
failed gate: the report says so, and the CLI turns that into exit code 8.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from drifa_edge import metrics as M
from drifa_edge.artifact.card import ModelCard
from drifa_edge.drift.criteria import (
    Bootstrap,
    Criterion,
    Side,
    delta_criteria,
    kl_criterion,
    referral_criteria,
    spearman_criterion,
)
from drifa_edge.drift.policy import DriftPolicy
from drifa_edge.errors import BadInputError

__all__ = ["Criterion", "DriftReport", "TaskDrift", "evaluate_drift", "evaluate_task"]


@dataclass(frozen=True)
class TaskDrift:
    task: str
    classes: tuple[str, ...]
    reference: dict[str, Any]  # task_metrics of the reference
    reference_again: dict[str, Any]  # ... of the reference with other draws (noise floor)
    candidate: dict[str, Any]
    noise: dict[str, Any]  # pair_metrics(reference, reference_again)
    pair: dict[str, Any]  # pair_metrics(reference, candidate)
    deltas: dict[str, float | None]  # candidate - reference
    noise_deltas: dict[str, float | None]  # reference_again - reference
    reliability: dict[str, dict[str, list[float]]]  # "reference" / "candidate" -> reliability bins
    criteria: tuple[Criterion, ...]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.criteria)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "criteria"}
        d["criteria"] = [dataclasses.asdict(c) for c in self.criteria]
        d["passed"] = self.passed
        return d


@dataclass(frozen=True)
class DriftReport:
    tasks: dict[str, TaskDrift]
    policy: DriftPolicy
    meta: dict[str, Any] = field(default_factory=dict)  # paths, runtimes, seeds, recalibration

    @property
    def passed(self) -> bool:
        return all(t.passed for t in self.tasks.values())

    @property
    def criteria(self) -> list[Criterion]:
        return [c for t in self.tasks.values() for c in t.criteria]

    @property
    def failures(self) -> list[Criterion]:
        return [c for c in self.criteria if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": "pass" if self.passed else "fail",
            "failures": [f"{c.task}: {c.name}" for c in self.failures],
            "policy": self.policy.to_dict(),
            "meta": self.meta,
            "tasks": {name: t.to_dict() for name, t in self.tasks.items()},
        }


def _threshold(card: ModelCard, task: str) -> float:
    rule = card.referral.get(task)
    return float("inf") if rule is None else float(rule.threshold)


def _reliability(side: Side, labels: np.ndarray, bins: int) -> dict[str, list[float]]:
    r = M.reliability_bins(side.probs, labels, bins)
    return {k: v.tolist() for k, v in r.items()}


def evaluate_task(
    task: str,
    classes: tuple[str, ...],
    ref: np.ndarray,
    ref_again: np.ndarray,
    cand: np.ndarray,
    labels: np.ndarray,
    ref_threshold: float,
    cand_threshold: float,
    policy: DriftPolicy,
    seed: int = 0,
) -> TaskDrift:
    """Every metric and criterion of one task; samples (N, S, C), labels (N,), -1 rows dropped."""
    sizes = {ref.shape[0], ref_again.shape[0], cand.shape[0], labels.shape[0]}
    if len(sizes) != 1:
        raise BadInputError(f"task {task!r}: samples and labels disagree on the number of cases: {sizes}")
    keep = M.scored(labels)
    if not keep.any():
        raise BadInputError(f"task {task!r}: no scored case (every label is -1)")
    ref, ref_again, cand, labels = ref[keep], ref_again[keep], cand[keep], labels[keep].astype(np.int64)
    metric = policy.referral_metric
    task_opts = {"referral_metric": metric, "bins": policy.ece_bins, "coverages": policy.coverages}
    m_ref = M.task_metrics(ref, labels, ref_threshold, **task_opts)
    m_again = M.task_metrics(ref_again, labels, ref_threshold, **task_opts)
    m_cand = M.task_metrics(cand, labels, cand_threshold, **task_opts)
    noise = M.pair_metrics(ref, ref_again, ref_threshold, ref_threshold, referral_metric=metric)
    pair = M.pair_metrics(ref, cand, ref_threshold, cand_threshold, referral_metric=metric)

    r = Side.of(ref, labels, ref_threshold, metric)
    n = Side.of(
        ref_again, labels, ref_threshold, metric
    )  # the noise floor refers at the reference's threshold
    c = Side.of(cand, labels, cand_threshold, metric)
    boot = Bootstrap(labels.size, policy, seed)
    criteria = [kl_criterion(task, M.per_case_kl(ref, cand), M.per_case_kl(ref, ref_again), policy)]
    for name, margin in (
        ("mutual_information", policy.spearman_mi_margin),
        ("predictive_entropy", policy.spearman_entropy_margin),
    ):
        short = "spearman_mi" if name == "mutual_information" else "spearman_entropy"
        a, b, x = getattr(r, name), getattr(n, name), getattr(c, name)
        criteria.append(spearman_criterion(task, short, a, b, x, margin, policy, boot))
    criteria += referral_criteria(task, r, n, c, policy, boot)
    criteria += delta_criteria(task, r, n, c, labels, policy, boot)
    return TaskDrift(
        task=task,
        classes=tuple(classes),
        reference=m_ref,
        reference_again=m_again,
        candidate=m_cand,
        noise=noise,
        pair=pair,
        deltas=M.metric_deltas(m_ref, m_cand),
        noise_deltas=M.metric_deltas(m_ref, m_again),
        reliability={
            "reference": _reliability(r, labels, policy.ece_bins),
            "candidate": _reliability(c, labels, policy.ece_bins),
        },
        criteria=tuple(criteria),
    )


def evaluate_drift(
    ref: dict[str, np.ndarray],
    ref_again: dict[str, np.ndarray],
    cand: dict[str, np.ndarray],
    labels: dict[str, np.ndarray],
    ref_card: ModelCard,
    cand_card: ModelCard,
    policy: DriftPolicy | None = None,
    *,
    seed: int = 0,
    meta: dict[str, Any] | None = None,
) -> DriftReport:
    """Judge a candidate against a reference from MC probabilities per task (N, S, C).

    ``ref_again`` is the reference with other dropout draws: the noise floor.
    Referral thresholds come from each card (a task without one refers nobody).
    ``seed`` drives the bootstrap. Returns the report; never raises on a failed gate.
    """
    policy = policy or DriftPolicy()
    tasks: dict[str, TaskDrift] = {}
    for spec in ref_card.model.tasks:
        name = spec.name
        for what, d in (
            ("reference", ref),
            ("ref_again", ref_again),
            ("candidate", cand),
            ("labels", labels),
        ):
            if name not in d:
                raise BadInputError(f"task {name!r} missing from {what} (has {sorted(d)})")
        tasks[name] = evaluate_task(
            name,
            spec.classes,
            np.asarray(ref[name]),
            np.asarray(ref_again[name]),
            np.asarray(cand[name]),
            np.asarray(labels[name]),
            _threshold(ref_card, name),
            _threshold(cand_card, name),
            policy,
            seed=seed,
        )
    return DriftReport(tasks=tasks, policy=policy, meta=dict(meta or {}))
