"""The drift gate: is a candidate build (INT8, another runtime) as good as the reference?

Monte Carlo dropout makes two runs of the *same* model disagree, so every
criterion is judged against what two runs of the reference show: the
permutation null of :mod:`drifa_edge.drift.noise`, built by swapping MC draws
between the reference's and the candidate's run of each case (no extra
inference). The candidate runs with the reference's seed, so where both
runtimes draw the same masks (torch vs torch) their draws pair up. The criteria
and the decision rule (Holm-corrected difference test plus clinical margins, or
an equivalence test) are in :mod:`drifa_edge.drift.criteria`.

:func:`evaluate_drift` works on MC samples already computed (pure numpy and
scipy.stats); :func:`drifa_edge.drift.check.run_check` (``drifa-edge check``)
opens the artifacts, loads the data, runs the engine and calls it. Neither
raises on a failed gate: the report says so, and the CLI turns that into exit code 8.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from drifa_edge import metrics as M
from drifa_edge.artifact.card import ModelCard
from drifa_edge.drift.criteria import Criterion, CriterionTest, criterion_tests, judge
from drifa_edge.drift.noise import OodFeatures, permutation_null
from drifa_edge.drift.policy import DriftPolicy
from drifa_edge.errors import BadInputError

__all__ = ["Criterion", "DriftReport", "OodFeatures", "TaskDrift", "evaluate_drift"]


@dataclass(frozen=True)
class TaskDrift:
    task: str
    classes: tuple[str, ...]
    cases: int  # scored cases the check used
    reference: dict[str, Any]  # task_metrics of the reference
    candidate: dict[str, Any]
    pair: dict[str, Any]  # pair_metrics(reference, candidate)
    noise: dict[str, float]  # median of each statistic's permutation null (two runs of the reference)
    deltas: dict[str, float | None]  # candidate - reference
    reliability: dict[str, dict[str, list[float]]]  # "reference" / "candidate" -> reliability bins
    changed: list[dict[str, Any]]  # cases whose class or referral differs between reference and candidate
    changed_by_noise: float  # median number of such cases between two runs of the reference
    criteria: tuple[Criterion, ...] = ()
    # the OOD criteria: flag rates and thresholds where judged, else {"skipped": why}
    ood: dict[str, Any] = field(default_factory=dict)

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

    @property
    def warnings(self) -> list[str]:
        """Sample-size and resolution warnings: where the verdict means less than the policy says."""
        out = []
        small = [c for c in self.criteria if c.cases_needed > c.cases]
        for task in dict.fromkeys(c.task for c in small):
            worst = max((c for c in small if c.task == task), key=lambda c: c.cases_needed)
            names = ", ".join(c.name for c in small if c.task == task)
            what = (
                "an unchanged build passes with < 80 % probability"
                if self.policy.decision == "equivalence"
                else "a shift of one margin is found with < 80 % probability"
            )
            out.append(
                f"task {task!r}: {worst.cases} cases are too few for policy '{self.policy.name}' "
                f"({names}: {what}); about {worst.cases_needed} cases are needed (worst: {worst.name})"
            )
        m = len(self.criteria)
        if (
            self.policy.decision != "equivalence"
            and m
            and 1 / (self.policy.permutations + 1) > self.policy.alpha / m
        ):
            out.append(
                f"permutations = {self.policy.permutations} cannot reach Holm's smallest level alpha / {m}: "
                f"no criterion can fail; set permutations >= {int(np.ceil(m / self.policy.alpha))}"
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": "pass" if self.passed else "fail",
            "failures": [f"{c.task}: {c.name}" for c in self.failures],
            "warnings": self.warnings,
            "policy": self.policy.to_dict(),
            "meta": self.meta,
            "tasks": {name: t.to_dict() for name, t in self.tasks.items()},
        }


def _threshold(card: ModelCard, task: str) -> float:
    rule = card.referral.get(task)
    return float("inf") if rule is None else float(rule.threshold)


def _reliability(probs: np.ndarray, labels: np.ndarray, bins: int) -> dict[str, list[float]]:
    r = M.reliability_bins(probs, labels, bins)
    return {k: v.tolist() for k, v in r.items()}


def changed_cases(
    ref: dict[str, np.ndarray],
    cand: dict[str, np.ndarray],
    labels: np.ndarray,
    classes: Sequence[str],
    index: np.ndarray,
    ids: Sequence[str] | None,
) -> list[dict[str, Any]]:
    """Cases whose predicted class or referral differs: one dict per case, by position in the split.

    ``ref`` / ``cand`` hold per-case ``predicted`` and ``referred``; ``index`` maps scored
    cases back to their row in the split, ``ids`` (optional) names the rows.
    """
    out = []
    changed = (ref["predicted"] != cand["predicted"]) | (ref["referred"] != cand["referred"])
    for i in np.flatnonzero(changed):
        row = int(index[i])
        out.append(
            {
                "row": row,
                "id": None if ids is None else str(ids[row]),
                "label": classes[labels[i]],
                "reference_class": classes[ref["predicted"][i]],
                "candidate_class": classes[cand["predicted"][i]],
                "reference_referred": bool(ref["referred"][i]),
                "candidate_referred": bool(cand["referred"][i]),
            }
        )
    return out


def _decisions(
    samples: np.ndarray, threshold: float, metric: str, used: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    from drifa_edge.metrics.uncertainty import refer, summarize

    s = summarize(samples, used)
    return {"predicted": s["predicted"], "referred": refer(s[metric], threshold)}


def evaluate_task(
    task: str,
    classes: tuple[str, ...],
    ref: np.ndarray,
    cand: np.ndarray,
    labels: np.ndarray,
    ref_threshold: float,
    cand_threshold: float,
    policy: DriftPolicy,
    seed: int = 0,
    ids: Sequence[str] | None = None,
    ood: OodFeatures | None = None,
    ood_skipped: str = "no OOD features given",
    cand_used: np.ndarray | None = None,
) -> tuple[TaskDrift, list[CriterionTest]]:
    """Metrics, changed cases and the criteria's evidence of one task; samples (N, T, C),
    labels (N,), -1 rows dropped; ``ood`` (per-draw embeddings, (N, T, E)) adds the OOD
    criteria, else ``ood_skipped`` says why not. The criteria are judged across tasks by
    :func:`evaluate_drift`. ``cand_used`` (N,): the candidate ran adaptive T and case i's
    answer rests on its first ``cand_used[i]`` draws (see
    :func:`~drifa_edge.drift.noise.permutation_null`); the OOD criteria need full runs."""
    sizes = {ref.shape[0], cand.shape[0], labels.shape[0]}
    if len(sizes) != 1:
        raise BadInputError(f"task {task!r}: samples and labels disagree on the number of cases: {sizes}")
    keep = M.scored(labels)
    if not keep.any():
        raise BadInputError(f"task {task!r}: no scored case (every label is -1)")
    ref, cand, labels = ref[keep], cand[keep], labels[keep].astype(np.int64)
    if ood is not None:
        ood = dataclasses.replace(
            ood,
            reference=np.asarray(ood.reference)[keep],
            candidate=np.asarray(ood.candidate)[keep],
            reference_prefix=None if ood.reference_prefix is None else np.asarray(ood.reference_prefix)[keep],
            candidate_prefix=None if ood.candidate_prefix is None else np.asarray(ood.candidate_prefix)[keep],
        )
    used = None if cand_used is None else np.asarray(cand_used)[keep]
    metric = policy.referral_metric
    task_opts = {"referral_metric": metric, "bins": policy.ece_bins, "coverages": policy.coverages}
    m_ref = M.task_metrics(ref, labels, ref_threshold, **task_opts)
    m_cand = M.task_metrics(cand, labels, cand_threshold, **task_opts, used=used)
    nd = permutation_null(
        ref, cand, labels, ref_threshold, cand_threshold,
        metric=metric, bins=policy.ece_bins, permutations=policy.permutations, seed=seed, ood=ood,
        cand_used=used,
    )  # fmt: skip
    r, c = _decisions(ref, ref_threshold, metric), _decisions(cand, cand_threshold, metric, used)
    cand_mean = M.summarize(cand, used)["mean"]
    drift = TaskDrift(
        task=task,
        classes=tuple(classes),
        cases=int(labels.size),
        reference=m_ref,
        candidate=m_cand,
        pair=M.pair_metrics(ref, cand, ref_threshold, cand_threshold, referral_metric=metric, cand_used=used),
        noise={k: float(np.median(v)) for k, v in nd.null.items()},
        deltas=M.metric_deltas(m_ref, m_cand),
        reliability={
            "reference": _reliability(ref.mean(axis=1), labels, policy.ece_bins),
            "candidate": _reliability(cand_mean, labels, policy.ece_bins),
        },
        changed=changed_cases(r, c, labels, classes, np.flatnonzero(keep), ids),
        changed_by_noise=float(np.median(nd.null["changed_cases"])),
        ood=_ood_summary(ood, nd) if ood is not None else {"skipped": ood_skipped},
    )
    return drift, criterion_tests(task, nd, policy)


def _ood_summary(ood: OodFeatures, nd) -> dict[str, Any]:
    """Flag rates and thresholds of both runs, each scored with its own density (as shipped)."""
    from drifa_edge.inference.ood import ood_scores

    rates = {}
    for side, emb, density, prefix in (
        ("reference", ood.reference, ood.density, ood.reference_prefix),
        ("candidate", ood.candidate, ood.candidate_density, ood.candidate_prefix),
    ):
        stats = None if prefix is None else {"t": prefix}
        score = ood_scores({"t": density}, np.mean(emb, axis=1), stats)["t"]
        rates[side] = {
            "threshold": float(density.threshold),
            "flag_rate": float((score > density.threshold).mean()),
        }
    return {"space": ood.density.space, **rates, "agreement": nd.observed["ood_agreement"]}


def evaluate_drift(
    ref: dict[str, np.ndarray],
    cand: dict[str, np.ndarray],
    labels: dict[str, np.ndarray],
    ref_card: ModelCard,
    cand_card: ModelCard,
    policy: DriftPolicy | None = None,
    *,
    seed: int = 0,
    meta: dict[str, Any] | None = None,
    ids: Sequence[str] | None = None,
    ood: dict[str, OodFeatures] | None = None,
    ood_skipped: str = "the reference has no OOD density (ood.npz; drifa-edge calibrate-ood)",
    cand_used: np.ndarray | None = None,
) -> DriftReport:
    """Judge a candidate against a reference from MC probabilities per task (N, T, C).

    Both runs need the same T (their draws are swapped to build the null). Referral
    thresholds come from each card (a task without one refers nobody). ``seed``
    drives the permutations; ``ids`` (N,) names the rows in the list of changed
    cases. Holm's correction runs over every criterion of every task. ``ood`` (per task,
    per-draw embeddings and OOD densities) adds the OOD criteria to the tasks it names;
    the others say ``ood_skipped``. ``cand_used`` (N,): the candidate ran adaptive T (see
    :func:`evaluate_task`). Returns the report; never raises on a failed gate.
    """
    policy = policy or DriftPolicy()
    drifts: dict[str, TaskDrift] = {}
    tests: list[CriterionTest] = []
    for k, spec in enumerate(ref_card.model.tasks):
        name = spec.name
        for what, d in (("reference", ref), ("candidate", cand), ("labels", labels)):
            if name not in d:
                raise BadInputError(f"task {name!r} missing from {what} (has {sorted(d)})")
        drift, task_tests = evaluate_task(
            name, spec.classes, np.asarray(ref[name]), np.asarray(cand[name]), np.asarray(labels[name]),
            _threshold(ref_card, name), _threshold(cand_card, name), policy, seed=seed + 7919 * k, ids=ids,
            ood=(ood or {}).get(name), ood_skipped=ood_skipped, cand_used=cand_used,
        )  # fmt: skip
        drifts[name], tests = drift, tests + task_tests
    judged = judge(tests, policy)
    tasks = {
        name: dataclasses.replace(d, criteria=tuple(c for c in judged if c.task == name))
        for name, d in drifts.items()
    }
    return DriftReport(tasks=tasks, policy=policy, meta=dict(meta or {}))
