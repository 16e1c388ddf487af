"""Per-case prediction as a library: open an artifact once, predict cases, close.

Two steps, so a service can run them in different places:

- :func:`prepare_case` reads and preprocesses one case's files as the model card says
  (no runtime; the result is picklable, so it can be made in a worker process or on
  another Ray node). A bad file never raises: the error is kept in the
  :class:`PreparedCase` and becomes the case's error record. It also records per task
  how each file was read (decoder, what was stored, transforms) and checks its input
  quality (:mod:`drifa_edge.data.quality`): a failing image is referred (``refer = true``,
  ``referral.reason = "input_quality"``) or, with ``quality_action="refuse"``, the case is
  an error.
- :class:`Predictor` holds the opened runtime(s) of one model or ensemble and turns
  prepared cases into the JSON records that ``drifa-edge predict`` writes, one per
  case, in the order given (same schema and, for the same seed, the same values).

Seeds: with a seedable runtime (torch) every case runs on its own mask stream, seeded
from (seed, case_id), so a case gets the same numbers whatever batch it falls in.
Runtimes with in-graph random ops (ONNX Runtime, OpenVINO) cannot be seeded: their
records say ``mc_seed: null``.

Example::

    with Predictor.open("runs/export", engine_cfg=EngineConfig(samples=30, seed=0)) as predictor:
        records = predictor.predict([Case("c1", {"derm": Path("a.png"), "scan": Path("b.png")})])
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from drifa_edge import __version__
from drifa_edge.artifact.builds import list_builds
from drifa_edge.artifact.card import ModelCard, ReferralRule
from drifa_edge.artifact.checkpoint import WEIGHTS_FILE
from drifa_edge.artifact.ensemble import ensemble_referral, resolve_members
from drifa_edge.data.quality import QUALITY_ACTIONS
from drifa_edge.errors import (
    ArtifactError,
    ConfigError,
    DrifaError,
    MissingDependencyError,
    UnknownChoiceError,
    suggest,
)
from drifa_edge.inference.adaptive import run_adaptive
from drifa_edge.inference.engine import (
    EngineConfig,
    returns_embedding,
    rows_per_call,
    run_mc,
    run_mc_embeddings,
)
from drifa_edge.inference.manifest import Case, case_seed, load_case_inputs
from drifa_edge.inference.ood import load_ood, run_prefix_statistics
from drifa_edge.inference.writers import (
    PredictRecord,
    TaskResult,
    apply_ood,
    ensemble_sha256,
    model_sha256,
    task_result,
)
from drifa_edge.metrics.sequential import Referral
from drifa_edge.metrics.uncertainty import summarize
from drifa_edge.runtimes.base import Runtime, RuntimeOptions, open_runtime, probe_runtime, runtime_names

log = logging.getLogger(__name__)

# --runtime auto on an export folder: the first installed runtime whose build is there
_EXPORT_RUNTIMES = ("openvino", "onnxruntime")


@dataclass
class PreparedCase:
    """One case decoded and preprocessed for a model card; picklable.

    ``arrays`` holds one (C, S, S) float32 array per task in the card's task order, or
    is None when the case could not be read; ``error`` then says why (file and fix).
    ``converted`` lists channel conversions applied (task -> "gray->RGB"); ``read`` says per
    task how its file was read and its input-quality verdict (the record's ``read``);
    ``quality`` holds the input-quality problems of the tasks that have any."""

    case: Case
    arrays: list[np.ndarray] | None = None
    converted: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    read: dict[str, dict[str, Any]] = field(default_factory=dict)
    quality: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None


def prepare_case(
    case: Case, card: ModelCard, allow_conversion: bool = False, quality_action: str = "refer"
) -> PreparedCase:
    """Decode, quality-check and preprocess ``case`` as ``card`` says; errors are captured,
    never raised.

    ``allow_conversion`` accepts gray files for RGB tasks and vice versa (converted and
    recorded), see :mod:`drifa_edge.inference.case_inputs`. ``quality_action`` "refer"
    (default) keeps a case whose image fails the input-quality check (it is referred),
    "refuse" makes it an error naming the file and the problem."""
    _check_quality_action(quality_action)
    try:
        inputs = load_case_inputs(case, card, allow_conversion)
    except Exception as e:  # a bad file must never stop the batch
        return PreparedCase(case, error=error_message(e))
    read = {
        task: x.read | {"input_quality": {"ok": not x.quality_issues, "issues": x.quality_issues}}
        for task, x in inputs.items()
    }
    quality = {task: x.quality_issues for task, x in inputs.items() if x.quality_issues}
    if quality and quality_action == "refuse":
        error = "input_quality: " + "; ".join(
            f"{task}: {inputs[task].read['file']}: {', '.join(issues)}" for task, issues in quality.items()
        )
        return PreparedCase(case, error=error, read=read, quality=quality)
    converted = {t: x.conversion for t, x in inputs.items() if x.conversion}
    return PreparedCase(case, [x.array for x in inputs.values()], converted, read=read, quality=quality)


def _check_quality_action(action: str) -> None:
    if action not in QUALITY_ACTIONS:
        raise ConfigError(
            f"input-quality action must be one of {QUALITY_ACTIONS}, got {action!r}"
            + suggest(action, QUALITY_ACTIONS)
        )


def run_settings(
    sha256: str,
    runtime: str,
    precision: str,
    cfg: EngineConfig,
    runtimes: Sequence[Runtime],
    quality_action: str,
) -> dict[str, Any]:
    """What makes two runs' numbers comparable; every record carries it and ``--resume``
    refuses a file written with other values (see ``inference.predict``)."""
    seedable = all(rt.seedable for rt in runtimes)
    if cfg.seed is None:
        policy = "unseeded"
    elif seedable:
        policy = f"per-case (seed, case_id), seed {cfg.seed}"
    else:
        policy = "in-graph random (not seedable)"
    settings = {
        "model_sha256": sha256,
        "runtime": runtime,
        "precision": precision,
        "samples": cfg.samples,
        "seed_policy": policy,
        "ensemble_size": len(runtimes),
        "input_quality_action": quality_action,
    }
    if cfg.adaptive is not None:  # samples is T_max; a record's mc_samples_used says what it used
        settings["adaptive"] = cfg.adaptive.to_dict()
    return settings


def error_message(e: BaseException) -> str:
    """A case's error text: our own messages as they are, anything else with its type."""
    return str(e) if isinstance(e, DrifaError) else f"{type(e).__name__}: {e}"


# ------------------------------------------------------------------ opening an artifact


def choose_runtime(path: str | Path, requested: str = "auto", precision: str = "fp32") -> str:
    """The runtime for ``--runtime requested``: itself, or for ``auto`` torch on a checkpoint
    folder, else the first installed of OpenVINO / ONNX Runtime whose files the export has."""
    if requested != "auto":
        if requested not in runtime_names():
            raise UnknownChoiceError(
                f"unknown runtime {requested!r}; choose auto or one of {list(runtime_names())}"
                + suggest(requested, runtime_names())
            )
        return requested
    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(f"{path}: not a folder; pass a checkpoint or export folder")
    member = resolve_members(path)[0]
    builds = list_builds(member)
    if any(b.runtime == "torch" for b in builds):
        return "torch"
    present, reasons = [], []
    for name in _EXPORT_RUNTIMES:
        build = next((b for b in builds if b.runtime == name and b.precision == precision), None)
        if build is None:
            continue
        present.append(f"{build.folder}/")
        probe = probe_runtime(name)
        if probe.get("available"):
            return name
        reasons.append(f"{name}: {probe.get('reason', 'not installed')}")
    if present:
        raise MissingDependencyError(
            f"{member} has {', '.join(present)} but no runtime for it is installed ({'; '.join(reasons)}); "
            "pip install 'drifa-edge[openvino]' or 'drifa-edge[onnx]'"
        )
    raise ArtifactError(
        f"{member}: neither a checkpoint ({WEIGHTS_FILE}) nor an export with a {precision} OpenVINO or "
        "ONNX build; pass a folder from 'drifa-edge train' or 'drifa-edge export', or name --runtime"
    )


def open_members(artifact: Path, runtime: str, options: RuntimeOptions) -> list[Runtime]:
    """One opened runtime per ensemble member; they must share tasks, classes and preprocessing."""
    runtimes: list[Runtime] = []
    try:
        for member in resolve_members(artifact):
            runtimes.append(open_runtime(runtime, member, options))
        first = runtimes[0].card
        for rt in runtimes[1:]:
            if rt.card.model.tasks != first.model.tasks or rt.card.preprocess != first.preprocess:
                raise ArtifactError(
                    f"{artifact}: ensemble members differ in tasks, classes or preprocessing; "
                    "every member must come from the same training recipe"
                )
    except BaseException:
        for rt in runtimes:
            rt.close()
        raise
    return runtimes


def referral_rules(artifact: Path, runtimes: list[Runtime]) -> dict[str, ReferralRule]:
    """Referral rule per task: an ensemble's own (fitted on its K*T samples, in
    ``ensemble.json``) if it has them, else the (first) model card's."""
    rules = dict(runtimes[0].card.referral)
    if len(runtimes) > 1:
        rules.update(ensemble_referral(artifact))
    return rules


# ------------------------------------------------------------------ the predictor


class Predictor:
    """The opened runtime(s) of one model or ensemble; see the module docstring.

    Not thread-safe: one predictor per thread (runtimes hold per-call state)."""

    def __init__(
        self,
        artifact: Path,
        runtime: str,
        runtimes: list[Runtime],
        options: RuntimeOptions,
        engine_cfg: EngineConfig,
        allow_conversion: bool = False,
        quality_action: str = "refer",
    ) -> None:
        _check_quality_action(quality_action)
        self.quality_action = quality_action
        self.artifact = artifact
        self.runtime = runtime
        self.runtimes = runtimes
        self.options = options
        self.engine_cfg = engine_cfg
        self.allow_conversion = allow_conversion
        self.card: ModelCard = runtimes[0].card
        self.rules = referral_rules(artifact, runtimes)
        self.sha256 = (
            model_sha256(self.card) if len(runtimes) == 1 else ensemble_sha256([rt.card for rt in runtimes])
        )
        self.per_case_seed = engine_cfg.seed is not None and all(rt.seedable for rt in runtimes)
        # OOD densities (ood.npz) of the model or of every ensemble member
        self.ood = load_ood(artifact)
        if self.ood and not all(returns_embedding(rt) for rt in runtimes):
            log.warning(
                "%s: runtime %r does not return the pooled embedding; predicting WITHOUT the OOD "
                "score (re-export, and rebuild TensorRT engines, to get it)", artifact, runtime,
            )  # fmt: skip
            self.ood = None
        fitted_t = self.ood.fitted_samples if self.ood else set()
        if self.ood and engine_cfg.adaptive is not None and len(self.ood.members) > 1:
            log.warning(
                "%s: adaptive T with an ensemble: predicting WITHOUT the OOD score (adaptive T "
                "averages member 0's embedding only; use fixed T for OOD referral)", artifact,
            )  # fmt: skip
            self.ood = None
            fitted_t = set()
        if fitted_t and engine_cfg.adaptive is not None:
            log.warning(
                "%s: the OOD threshold was fitted with T=%s MC samples; adaptive T averages the "
                "embedding over fewer draws for settled cases, so their OOD referral rate may differ",
                artifact, sorted(fitted_t),
            )  # fmt: skip
        elif fitted_t and fitted_t != {engine_cfg.samples}:
            # the MC-mean embedding's spread shrinks with T, so the fitted threshold is T-specific
            log.warning(
                "%s: the OOD threshold was fitted with T=%s MC samples, this run uses T=%d; "
                "the OOD referral rate will differ (re-run calibrate-ood with -T %d)",
                artifact, sorted(fitted_t), engine_cfg.samples, engine_cfg.samples,
            )  # fmt: skip
        # the run metadata every record ends with; ``settings`` is what --resume compares
        self.settings = run_settings(
            self.sha256, runtime, options.precision, engine_cfg, runtimes, quality_action
        )
        self.meta: dict[str, Any] = self.settings | {
            "device": runtimes[0].device,
            "seed": engine_cfg.seed,
            "rows_per_call": rows_per_call(engine_cfg, self.card.model, options.precision),
            "drifa_edge_version": __version__,
        }

    @classmethod
    def open(
        cls,
        artifact: str | Path,
        runtime: str = "auto",
        options: RuntimeOptions | None = None,
        engine_cfg: EngineConfig | None = None,
        allow_conversion: bool = False,
        quality_action: str = "refer",
    ) -> Predictor:
        """Open ``artifact`` (checkpoint, export or ensemble folder) with ``runtime``
        ("auto": torch for a checkpoint, else an installed runtime the export has a build for)."""
        options = options or RuntimeOptions()
        engine_cfg = engine_cfg or EngineConfig()
        artifact = Path(artifact)
        name = choose_runtime(artifact, runtime, options.precision)
        runtimes = open_members(artifact, name, options)
        try:
            return cls(artifact, name, runtimes, options, engine_cfg, allow_conversion, quality_action)
        except BaseException:
            for rt in runtimes:
                rt.close()
            raise

    @property
    def device(self) -> str:
        return self.runtimes[0].device

    def compile_for(self, cases: int) -> None:
        """Let runtimes that compile per call shape (OpenVINO) do it now for a first call of
        ``cases`` cases, so that call costs what a warm one does (cold start, issue 19)."""
        rows = min(max(1, int(cases)) * self.engine_cfg.samples, self.meta["rows_per_call"])
        for rt in self.runtimes:
            if hasattr(rt, "compile_for"):
                rt.compile_for(rows)

    @property
    def ensemble_size(self) -> int:
        return len(self.runtimes)

    def prepare(self, case: Case) -> PreparedCase:
        """:func:`prepare_case` with this predictor's card, channel and input-quality settings."""
        return prepare_case(case, self.card, self.allow_conversion, self.quality_action)

    def predict(self, cases: Sequence[Case]) -> list[PredictRecord]:
        """One record per case, in order (prepared here, then run together)."""
        return self.predict_prepared([self.prepare(case) for case in cases])

    def predict_prepared(self, items: Sequence[PreparedCase]) -> list[PredictRecord]:
        """One record per prepared case, in order. The good cases run as one engine batch;
        when that batch fails, each case runs alone so one bad case cannot take the others."""
        outcomes: dict[int, tuple[dict[str, TaskResult] | None, int | None, str | None, dict]] = {}
        self._run([(i, it) for i, it in enumerate(items) if it.ok], outcomes)
        records = []
        for i, it in enumerate(items):
            tasks, mc_seed, error, extra = outcomes.get(i, (None, None, it.error, {}))
            records.append(self._record(it, tasks, mc_seed, error, extra))
        return records

    def _run(self, good: list[tuple[int, PreparedCase]], outcomes: dict) -> None:
        if not good:
            return
        try:
            results = self._infer([it for _, it in good])
        except Exception as e:
            if len(good) == 1:
                outcomes[good[0][0]] = (None, None, f"inference failed: {error_message(e)}", {})
                return
            log.warning("batch of %d cases failed (%s); retrying one by one", len(good), e)
            for pair in good:
                self._run([pair], outcomes)
            return
        for (i, _), (tasks, mc_seed, extra) in zip(good, results, strict=True):
            outcomes[i] = (tasks, mc_seed, None, extra)

    def _infer(self, good: list[PreparedCase]) -> list[tuple[dict[str, TaskResult], int | None, dict]]:
        n_tasks = len(self.card.task_names)
        images = [np.stack([it.arrays[k] for it in good]) for k in range(n_tasks)]  # (B, C, S, S)
        cfg = self.engine_cfg
        seeds = [case_seed(cfg.seed, it.case.case_id) for it in good] if self.per_case_seed else None
        if cfg.adaptive is not None:
            return self._infer_adaptive(good, images, seeds)
        if self.ood:
            probs, embeddings = run_mc_embeddings(self.runtimes, images, cfg, case_seeds=seeds)
            prefix = None
            if self.ood.needs_prefix:  # one more (deterministic) prefix pass per member
                names = self.card.task_names
                prefix = [
                    dict(zip(names, run_prefix_statistics(rt, images), strict=True)) for rt in self.runtimes
                ]
            scores = self.ood.scores(embeddings, prefix)  # task -> (B,)
        else:
            probs = run_mc(self.runtimes, images, cfg, case_seeds=seeds)  # task -> (B, K*T, C)
            scores = {}
        summaries = {task: summarize(p) for task, p in probs.items()}
        results = []
        for i in range(len(good)):
            tasks = {}
            for task, s in summaries.items():
                tasks[task] = task_result(
                    self.card, task, s, i, self.rules.get(task), good[i].quality.get(task)
                )
                if task in scores:
                    apply_ood(tasks[task], float(scores[task][i]), self.ood.threshold(task))
            results.append((tasks, None if seeds is None else seeds[i], {}))
        return results

    def _infer_adaptive(self, good: list[PreparedCase], images, seeds) -> list[tuple[dict, int | None, dict]]:
        """Adaptive T (:mod:`drifa_edge.inference.adaptive`): per case its own number of draws;
        the record says how many (``mc_samples_used``, per member) and why it stopped."""
        cfg = self.engine_cfg
        referral = {t: Referral(r.metric, r.threshold) for t, r in self.rules.items()}
        run = run_adaptive(
            self.runtimes, images, cfg, cfg.adaptive, referral, case_seeds=seeds, embedding=bool(self.ood)
        )
        scores = {}
        if self.ood and run.embedding is not None:  # one model (ensembles: OOD off, see __init__)
            prefix = None
            if self.ood.needs_prefix:
                names = self.card.task_names
                prefix = [dict(zip(names, run_prefix_statistics(self.runtimes[0], images), strict=True))]
            scores = self.ood.scores([run.embedding], prefix)
        results = []
        for i in range(len(good)):
            tasks = {}
            for task in self.card.task_names:
                s = summarize(run.probabilities(task, i)[None])  # (1, K*used, C)
                tasks[task] = task_result(
                    self.card, task, s, 0, self.rules.get(task), good[i].quality.get(task)
                )
                if task in scores:
                    apply_ood(tasks[task], float(scores[task][i]), self.ood.threshold(task))
            extra = {"mc_samples_used": int(run.used[i]), "mc_stop": run.stop[i]}
            results.append((tasks, None if seeds is None else seeds[i], extra))
        return results

    def _record(
        self,
        it: PreparedCase,
        tasks: dict[str, TaskResult] | None,
        mc_seed: int | None,
        error: str | None,
        extra: dict[str, Any] | None = None,
    ) -> PredictRecord:
        case = it.case
        record: dict[str, Any] = {
            "case_id": case.case_id,
            "status": "error" if error is not None else "ok",
            "error": error,
            "tasks": tasks,
            "inputs": {t: None if p is None else str(p) for t, p in case.inputs.items()},
        }
        if it.read:
            record["read"] = it.read
        if it.converted:
            record["channel_conversion"] = it.converted
        record["mc_seed"] = mc_seed
        if self.engine_cfg.adaptive is not None:  # None for an error record: nothing was drawn
            record["mc_samples_used"] = (extra or {}).get("mc_samples_used")
            record["mc_stop"] = (extra or {}).get("mc_stop")
        record.update(self.meta)
        return record  # type: ignore[return-value] - built key by key in PredictRecord's order

    def close(self) -> None:
        for rt in self.runtimes:
            rt.close()
        self.runtimes = []

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
