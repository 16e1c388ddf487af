"""``drifa-edge check`` as a library call: open two artifacts, run both over the
same labelled data with the same seeds, and hand the MC samples to the gate.

Each side runs once, the candidate with the reference's seed, so where both
runtimes can share the dropout masks (torch against torch) their draws pair up.
The noise model needs no third run: it swaps MC draws between the two runs
(:mod:`drifa_edge.drift.noise`). The report says how many cases were used and
the smallest shift they can detect; a test set too small for the policy is
logged as a warning with the number of cases it would need.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from drifa_edge import metrics as M
from drifa_edge.artifact.card import ModelCard, ReferralRule, apply_calibration, read_card, write_card
from drifa_edge.artifact.ensemble import resolve_members
from drifa_edge.drift.gate import DriftReport, evaluate_drift
from drifa_edge.drift.policy import DriftPolicy
from drifa_edge.errors import ArtifactError, BadInputError, ConfigError, DrifaError
from drifa_edge.inference.engine import EngineConfig, run_mc_logits, softmax
from drifa_edge.inference.predictor import choose_runtime, open_members
from drifa_edge.metrics.temperature import fit_calibration
from drifa_edge.progress import stage
from drifa_edge.runtimes.base import Runtime, RuntimeOptions

log = logging.getLogger(__name__)

# (runtime, folder of a precision in an export folder); the first one installed and present wins
_EXPORT_RUNTIMES = ("openvino", "onnxruntime")


def member_paths(path: str | Path) -> list[Path]:
    """The member folders of an artifact: several for an ensemble, else the path itself."""
    return [Path(p) for p in resolve_members(Path(path))]


def open_artifact(path: str | Path, runtime: str, options: RuntimeOptions) -> list[Runtime]:
    """One runtime per ensemble member of the artifact at ``path``."""
    return open_members(Path(path), choose_runtime(path, runtime, options.precision), options)


def _split_seed(card: ModelCard) -> int:
    """The seed the training run split unsplit data with (so 'test' means the same cases)."""
    for desc in (card.data.get("sets") or {}).values():
        seed = (desc.get("options") or {}).get("seed") if isinstance(desc, dict) else None
        if isinstance(seed, int):
            return seed
    return 0


def load_split(values: Sequence[str], card: ModelCard, split: str, limit: int | None):
    """(images, labels, row ids) of one split, preprocessed for ``card``."""
    from drifa_edge.data.sources import load_eval_arrays

    return load_eval_arrays(values, card, split=split, limit=limit, seed=_split_seed(card))


def _probabilities(
    logits: dict[str, np.ndarray], temperatures: dict[str, list[float]]
) -> dict[str, np.ndarray]:
    """Softmax of raw MC logits (N, K*T, C), member k's block with member k's temperature."""
    out = {}
    for task, z in logits.items():
        temps = temperatures[task]
        out[task] = np.concatenate(
            [softmax(part, t) for part, t in zip(np.split(z, len(temps), axis=1), temps, strict=True)], axis=1
        )
    return out


def _card_temperatures(runtimes: Sequence[Runtime]) -> dict[str, list[float]]:
    names = runtimes[0].card.task_names
    return {t: [rt.card.temperature_of(t) for rt in runtimes] for t in names}


def _missing_thresholds(card: ModelCard) -> list[str]:
    return [
        t for t in card.task_names if t not in card.referral or not math.isfinite(card.referral[t].threshold)
    ]


def _check_compatible(ref: ModelCard, cand: ModelCard) -> None:
    a = [(t.name, t.classes) for t in ref.model.tasks]
    b = [(t.name, t.classes) for t in cand.model.tasks]
    if a != b:
        raise ArtifactError(f"reference and candidate predict different tasks or classes: {a} vs {b}")


@dataclass(frozen=True)
class CheckConfig:
    """One drift check (``drifa-edge check``): what to compare, on which data, how.

    ``device`` is the candidate's device (runtime-specific name), ``ref_device`` the
    reference's. ``recalibrate`` refits the candidate's temperature and referral threshold
    on validation data; ``write_candidate_card`` then writes them into the candidate's
    model card(s).
    ``data`` are ``NAME=PATH`` values or ``"synthetic"`` (see ``drifa_edge.data.sources``).
    """

    reference: Path
    candidate: Path
    data: tuple[str, ...]
    policy: DriftPolicy = field(default_factory=DriftPolicy)
    samples: int = 30
    seed: int = 0
    out: Path | None = None
    ref_runtime: str = "torch"
    cand_runtime: str = "auto"
    cand_precision: str = "fp32"
    ref_precision: str = "fp32"
    recalibrate: bool = False
    limit: int | None = None
    device: str | None = None
    ref_device: str | None = None
    write_candidate_card: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "reference", Path(self.reference))
        object.__setattr__(self, "candidate", Path(self.candidate))
        object.__setattr__(self, "data", tuple(self.data))
        if self.out is not None:
            object.__setattr__(self, "out", Path(self.out))
        if self.samples < 1:
            raise ConfigError(f"samples (T) must be >= 1, got {self.samples}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"--limit must be >= 1 (or unset for every case), got {self.limit}")

    def replace(self, **changes: Any) -> CheckConfig:
        return dataclasses.replace(self, **changes)


def run_check(
    reference_path: str | Path,
    candidate_path: str | Path,
    data_values: Sequence[str],
    policy: DriftPolicy | None = None,
    **options: Any,
) -> DriftReport:
    """:func:`check_drift` with the :class:`CheckConfig` fields as keyword arguments."""
    cfg = CheckConfig(reference_path, candidate_path, tuple(data_values), policy or DriftPolicy(), **options)
    return check_drift(cfg)


def check_drift(cfg: CheckConfig) -> DriftReport:
    """Run the drift gate of a candidate build against a reference on labelled test data.

    Thresholds a card lacks are fitted on validation data (or, with none, on the test data
    itself: flagged in ``meta``). Writes report.json, report.md and one reliability PNG per
    task into ``cfg.out`` when given.
    """
    started = time.perf_counter()
    ref_rts = open_artifact(
        cfg.reference, cfg.ref_runtime, RuntimeOptions(precision=cfg.ref_precision, device=cfg.ref_device)
    )
    cand_rts = open_artifact(
        cfg.candidate, cfg.cand_runtime, RuntimeOptions(precision=cfg.cand_precision, device=cfg.device)
    )
    try:
        ref_card, cand_card = ref_rts[0].card, cand_rts[0].card
        _check_compatible(ref_card, cand_card)
        test = _load_pair(cfg.data, ref_card, cand_card, "test", cfg.limit)
        need_val = cfg.recalibrate or _missing_thresholds(ref_card) or _missing_thresholds(cand_card)
        val = None
        if need_val:
            try:
                val = _load_pair(cfg.data, ref_card, cand_card, "val", cfg.limit)
            except DrifaError as e:
                if cfg.recalibrate:
                    raise
                log.warning("no validation data for fitting missing referral thresholds (%s); using test", e)
        report = check_arrays(
            ref_rts, cand_rts, test, cfg.policy, samples=cfg.samples, seed=cfg.seed, val=val,
            recalibrate=cfg.recalibrate,
        )  # fmt: skip
    finally:
        for rt in ref_rts + cand_rts:
            rt.close()
    meta = dict(report.meta)
    meta.update(
        reference=str(cfg.reference),
        candidate=str(cfg.candidate),
        data=list(cfg.data),
        limit=cfg.limit,
        seconds=round(time.perf_counter() - started, 1),
    )
    if cfg.write_candidate_card and cfg.recalibrate:
        meta["candidate_card_written"] = write_calibration(cfg.candidate, meta["candidate_calibration"])
    report = DriftReport(tasks=report.tasks, policy=report.policy, meta=meta)
    for warning in report.warnings:
        log.warning(warning)
    if cfg.out is not None:
        from drifa_edge.drift.report import write_report

        write_report(report, cfg.out)
    return report


def write_calibration(path: str | Path, calibration: dict[str, Any]) -> list[str]:
    """Store refitted temperatures and referral rules in the card of every member at ``path``
    (each member keeps its own file hashes; only these two sections change)."""
    written = []
    for member in member_paths(path):
        card = read_card(member, verify=False)
        temperature = {**card.temperature, **calibration["temperature"]}
        referral = {**card.referral, **{t: ReferralRule(**r) for t, r in calibration["referral"].items()}}
        write_card(card.replace(temperature=temperature, referral=referral), member)
        written.append(str(member))
    return written


def _load_pair(values, ref_card: ModelCard, cand_card: ModelCard, split: str, limit: int | None):
    """Images for each card (shared when both preprocess alike) and one set of labels."""
    ref_images, labels, ids = load_split(values, ref_card, split, limit)
    if cand_card.preprocess == ref_card.preprocess:
        return ref_images, ref_images, labels, ids
    cand_images, cand_labels, cand_ids = load_split(values, cand_card, split, limit)
    if list(ids) != list(cand_ids) or any(not np.array_equal(labels[t], cand_labels[t]) for t in labels):
        raise BadInputError("the candidate's preprocessing selected different cases than the reference's")
    return ref_images, cand_images, labels, ids


def check_arrays(
    ref_rts: Sequence[Runtime],
    cand_rts: Sequence[Runtime],
    test: tuple,
    policy: DriftPolicy,
    samples: int = 30,
    seed: int = 0,
    val: tuple | None = None,
    recalibrate: bool = False,
) -> DriftReport:
    """The gate on arrays already loaded: ``test`` / ``val`` = (ref images, cand images,
    labels {task: (N,)}, row ids). Separated from :func:`run_check` for tests and the demo."""
    ref_images, cand_images, labels, ids = test
    cfg = EngineConfig(samples=samples, seed=seed)
    cases = len(next(iter(labels.values()))) if labels else 0
    stage(
        f"drift check 1 of 3: reference, {cases} cases x T={samples} ({ref_rts[0].name} {ref_rts[0].precision})"
    )
    ref_logits = run_mc_logits(ref_rts, ref_images, cfg)
    stage(f"drift check 2 of 3: candidate ({cand_rts[0].name} {cand_rts[0].precision})")
    cand_logits = run_mc_logits(cand_rts, cand_images, cfg)
    ref_temps, cand_temps = _card_temperatures(ref_rts), _card_temperatures(cand_rts)
    ref_card, cand_card = ref_rts[0].card, cand_rts[0].card
    meta: dict[str, Any] = {
        "samples": samples,
        "seed": seed,
        "noise_model": "permutation of MC draws between the two runs (drifa_edge.drift.noise)",
        "reference_runtime": _describe(ref_rts),
        "candidate_runtime": _describe(cand_rts),
        # masks are shared only by one seedable runtime at one precision (bf16 draws other uniforms)
        "shared_masks": all(rt.seedable for rt in ref_rts + cand_rts)
        and {(rt.name, rt.precision) for rt in ref_rts} == {(rt.name, rt.precision) for rt in cand_rts},
        "cases": {t: int(M.scored(y).sum()) for t, y in labels.items()},
        "thresholds_fitted": {},
    }
    # the reference's own missing thresholds: fitted like the candidate's, on val if there is one
    ref_card = _fill_thresholds(
        ref_card, ref_rts, ref_temps, val, 0, ref_logits, labels, cfg, policy, meta, "ref"
    )
    if recalibrate:
        if val is None:
            raise BadInputError("--recalibrate needs validation data (a 'val' split)")
        val_logits = run_mc_logits(cand_rts, val[1], cfg)
        fitted = fit_calibration(val_logits, val[2], policy.referral_target_rate, policy.referral_metric)
        before = _probabilities(cand_logits, cand_temps)
        new_temps = {t: [f["temperature"]] * len(cand_rts) for t, f in fitted.items()}
        after = _probabilities(cand_logits, new_temps)
        meta["recalibration"] = {
            t: {
                "temperature_before": cand_temps[t][0],
                "temperature_after": fitted[t]["temperature"],
                "threshold_before": _finite_or_none(_threshold_of(cand_card, t)),
                "threshold_after": fitted[t]["threshold"],
                "ece_before": _ece(before[t], labels[t], policy.ece_bins),
                "ece_after": _ece(after[t], labels[t], policy.ece_bins),
                "validation_cases": fitted[t]["cases"],
            }
            for t in fitted
        }
        cand_card = apply_calibration(
            cand_card, fitted, policy.referral_target_rate, policy.referral_metric,
            provenance={"fitted_by": "drifa-edge check --recalibrate", "split": "val", "samples": samples},
        )  # fmt: skip
        cand_temps = new_temps
        meta["candidate_calibration"] = {
            "temperature": dict(cand_card.temperature),
            "referral": {t: rule.to_dict() for t, rule in cand_card.referral.items()},
        }
    else:
        cand_card = _fill_thresholds(
            cand_card, cand_rts, cand_temps, val, 1, cand_logits, labels, cfg, policy, meta, "cand"
        )
    meta["temperatures"] = {"reference": ref_temps, "candidate": cand_temps}
    stage("drift check 3 of 3: metrics and the permutation null")
    return evaluate_drift(
        _probabilities(ref_logits, ref_temps),
        _probabilities(cand_logits, cand_temps),
        labels,
        ref_card,
        cand_card,
        policy,
        seed=seed,
        meta=meta,
        ids=None if ids is None else [str(i) for i in ids],
    )


def _fill_thresholds(card, rts, temps, val, which, test_logits, labels, cfg, policy, meta, side) -> ModelCard:
    """Fit the referral thresholds a card lacks: on val (``val[which]`` images) or on test."""
    missing = _missing_thresholds(card)
    if not missing:
        return card
    if val is not None:
        logits, fit_labels, where = run_mc_logits(rts, val[which], cfg), val[2], "val"
    else:
        logits, fit_labels, where = test_logits, labels, "test (no validation data: optimistic)"
    logits = {t: logits[t] for t in missing}
    given = {t: temps[t][0] for t in missing}
    fitted = fit_calibration(logits, fit_labels, policy.referral_target_rate, policy.referral_metric, given)
    for t in missing:
        meta["thresholds_fitted"][f"{side}:{t}"] = {"threshold": fitted[t]["threshold"], "on": where}
    referral = dict(card.referral)
    referral.update(
        apply_calibration(card, fitted, policy.referral_target_rate, policy.referral_metric).referral
    )
    return card.replace(referral=referral)


def _threshold_of(card: ModelCard, task: str) -> float:
    rule = card.referral.get(task)
    return float("inf") if rule is None else rule.threshold


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _ece(samples: np.ndarray, labels: np.ndarray, bins: int) -> float:
    keep = M.scored(labels)
    return M.ece(samples[keep].mean(axis=1), labels[keep], bins)


def _describe(rts: Sequence[Runtime]) -> dict[str, Any]:
    rt = rts[0]
    return {"name": rt.name, "precision": rt.precision, "device": rt.device, "members": len(rts)}
