"""Prediction over files: read and preprocess each case as its model card says, run
the MC engine on batches of good cases, and write one JSON line per case as soon
as its batch is done.

A bad case (unreadable, corrupt, empty, NaN, too large, missing modality, wrong
channel count) becomes an error line naming the file and a message on stderr;
the batch goes on. Output lines are fsynced one by one, so a killed run keeps
every finished case and ``resume`` runs only the others (cases that ended in an
error are tried again). ``PredictSummary.exit_code`` is 9 when any case failed.

Channels: a file whose channel count differs from the card's is reported, not
converted, unless the card or the caller allows it; a gray image stored as RGB is gray
(see ``inference.case_inputs``). Every line records per task how its file was read
(``read``: decoder, what was stored, transforms) and its input quality.

Input quality (``data.quality``): a case whose image fails a limit is predicted with
``refer = true`` and ``referral.reason = "input_quality"`` (``quality_action="refer"``, the
default) or becomes an error line (``"refuse"``).

Resume: every line carries the run's settings (model/build hash, runtime, precision, T,
seed policy, ensemble size, input-quality action); a resume whose settings differ from the
file's is refused, naming each difference, so one file never mixes two kinds of numbers.

Seeds: with a seedable runtime (torch) every case runs on its own mask stream,
seeded from (seed, case_id), so a case gets the same numbers whatever batch it
falls in, on resume too. Runtimes with in-graph random ops (ONNX Runtime,
OpenVINO) cannot be seeded: their lines record ``mc_seed: null``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from drifa_edge import __version__
from drifa_edge.card import ModelCard, ReferralRule
from drifa_edge.data.quality import QUALITY_ACTIONS
from drifa_edge.errors import (
    ArtifactError,
    ConfigError,
    DrifaError,
    MissingDependencyError,
    UnsupportedBackendError,
    suggest,
)
from drifa_edge.export.layout import onnx_folder, openvino_folder
from drifa_edge.inference.engine import EngineConfig, rows_per_call, run_mc
from drifa_edge.inference.manifest import Case, case_seed, load_case_inputs
from drifa_edge.inference.uncertainty import summarize
from drifa_edge.inference.writers import (
    JsonlWriter,
    ensemble_sha256,
    model_sha256,
    read_jsonl,
    rewrite_jsonl,
    task_result,
    write_csv,
)
from drifa_edge.runtimes.base import Runtime, RuntimeOptions, open_runtime, probe_runtime, runtime_names

log = logging.getLogger(__name__)

FORMATS = ("jsonl", "csv")
PARTIAL_FAILURE_EXIT = 9
WEIGHTS_FILE = "model.safetensors"  # a checkpoint folder (training.checkpoint, kept torch-free here)
# --runtime auto on an export folder: the first installed runtime whose folder is there
_EXPORT_RUNTIMES = (("openvino", openvino_folder), ("onnxruntime", onnx_folder))


# ------------------------------------------------------------------ artifact


def resolve_members(path: str | Path) -> list[Path]:
    """Member folders of an ensemble (``ensemble.json``), or ``[path]`` for one model."""
    try:
        from drifa_edge.training.ensemble import resolve_members as resolve
    except ImportError:  # not built yet, or torch missing on an edge install
        from drifa_edge.export.layout import read_members as resolve
    return list(resolve(Path(path)))


def choose_runtime(path: str | Path, requested: str = "auto", precision: str = "fp32") -> str:
    """The runtime for ``--runtime requested``: itself, or for ``auto`` torch on a checkpoint
    folder, else the first installed of OpenVINO / ONNX Runtime whose files the export has."""
    if requested != "auto":
        if requested not in runtime_names():
            raise UnsupportedBackendError(
                f"unknown runtime {requested!r}; choose auto or one of {list(runtime_names())}"
                + suggest(requested, runtime_names())
            )
        return requested
    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(f"{path}: not a folder; pass a checkpoint or export folder")
    member = resolve_members(path)[0]
    if (member / WEIGHTS_FILE).is_file():
        return "torch"
    present, reasons = [], []
    for name, folder_of in _EXPORT_RUNTIMES:
        try:
            sub = folder_of(precision)
        except DrifaError:  # this runtime has no build of that precision
            continue
        if not (member / sub).is_dir():
            continue
        present.append(f"{sub}/")
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


def _open_members(artifact: Path, runtime: str, options: RuntimeOptions) -> list[Runtime]:
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


# ------------------------------------------------------------------ records


def referral_rules(artifact: Path, runtimes: list[Runtime]) -> dict[str, ReferralRule]:
    """Referral rule per task: an ensemble's own (fitted on its K*T samples, in
    ``ensemble.json``) if it has them, else the (first) model card's."""
    rules = dict(runtimes[0].card.referral)
    manifest = artifact / "ensemble.json"
    if len(runtimes) > 1 and manifest.is_file():
        try:
            fitted = json.loads(manifest.read_text()).get("referral") or {}
            rules.update({task: ReferralRule(**rule) for task, rule in fitted.items()})
        except (json.JSONDecodeError, TypeError, AttributeError) as e:
            raise ArtifactError(f"{manifest}: unreadable 'referral' section ({e})") from e
    return rules


@dataclass
class PredictSummary:
    """What a prediction run did; the lines themselves are in ``out_path``."""

    out_path: Path | None
    csv_path: Path | None
    runtime: str
    precision: str
    device: str
    samples: int
    seed: int | None
    ensemble_size: int
    model_sha256: str
    ok: int = 0
    failed: int = 0
    skipped: int = 0  # already in the output file (resume)
    quality_referred: int = 0  # ok cases referred because an image failed the input-quality check
    errors: list[tuple[str, str]] = field(default_factory=list)
    preview: list[dict[str, Any]] = field(default_factory=list)  # the first records written

    @property
    def exit_code(self) -> int:
        return PARTIAL_FAILURE_EXIT if self.failed else 0


# ------------------------------------------------------------------ the run


class _Run:
    """State of one prediction run: runtimes, output, counters."""

    PREVIEW = 50

    def __init__(
        self,
        runtimes,
        rules,
        engine_cfg,
        writer,
        summary,
        allow_conversion,
        on_record,
        quality_action="refer",
    ) -> None:
        self.runtimes = runtimes
        self.card: ModelCard = runtimes[0].card
        self.rules = rules
        self.cfg = engine_cfg
        self.writer = writer
        self.summary = summary
        self.allow_conversion = allow_conversion
        self.on_record = on_record
        self.quality_action = quality_action
        self.per_case_seed = engine_cfg.seed is not None and all(rt.seedable for rt in runtimes)
        self.meta = run_settings(summary, engine_cfg, runtimes, quality_action) | {
            "device": summary.device,
            "seed": engine_cfg.seed,
            "rows_per_call": rows_per_call(engine_cfg, self.card.model, summary.precision),
            "drifa_edge_version": __version__,
        }

    def prepare(self, case: Case) -> dict[str, Any]:
        item: dict[str, Any] = {"case": case}
        try:
            inputs = load_case_inputs(case, self.card, self.allow_conversion)
        except Exception as e:  # a bad file must never stop the batch
            item["error"] = _message(e)
            return item
        item["read"] = {
            task: x.read | {"input_quality": {"ok": not x.quality_issues, "issues": x.quality_issues}}
            for task, x in inputs.items()
        }
        item["quality"] = {task: x.quality_issues for task, x in inputs.items() if x.quality_issues}
        if item["quality"] and self.quality_action == "refuse":
            item["error"] = "input_quality: " + "; ".join(
                f"{task}: {inputs[task].read['file']}: {', '.join(issues)}"
                for task, issues in item["quality"].items()
            )
            return item
        item["arrays"] = [x.array for x in inputs.values()]
        item["converted"] = {t: x.conversion for t, x in inputs.items() if x.conversion}
        return item

    def run_batch(self, items: list[dict[str, Any]]) -> None:
        good = [it for it in items if "error" not in it]
        if good:
            try:
                self._infer(good)
            except Exception as e:
                if len(good) == 1:
                    good[0]["error"] = f"inference failed: {_message(e)}"
                else:  # isolate the case that breaks the batch
                    log.warning("batch of %d cases failed (%s); retrying one by one", len(good), e)
                    for it in good:
                        self.run_batch([it])
                    good = []
        for it in items:
            if "written" not in it:
                self._write(it)

    def _infer(self, good: list[dict[str, Any]]) -> None:
        n_tasks = len(self.card.task_names)
        images = [np.stack([it["arrays"][k] for it in good]) for k in range(n_tasks)]  # (B, C, S, S)
        seeds = [case_seed(self.cfg.seed, it["case"].case_id) for it in good] if self.per_case_seed else None
        probs = run_mc(self.runtimes, images, self.cfg, case_seeds=seeds)  # task -> (B, K*T, C)
        summaries = {task: summarize(p) for task, p in probs.items()}
        for i, it in enumerate(good):
            it["tasks"] = {
                task: task_result(
                    self.card, task, s, i, self.rules.get(task), it.get("quality", {}).get(task)
                )
                for task, s in summaries.items()
            }
            it["mc_seed"] = None if seeds is None else seeds[i]

    def _write(self, it: dict[str, Any]) -> None:
        case: Case = it["case"]
        record: dict[str, Any] = {
            "case_id": case.case_id,
            "status": "error" if "error" in it else "ok",
            "error": it.get("error"),
            "tasks": it.get("tasks"),
            "inputs": {t: None if p is None else str(p) for t, p in case.inputs.items()},
        }
        if it.get("read"):
            record["read"] = it["read"]
        if it.get("converted"):
            record["channel_conversion"] = it["converted"]
        record["mc_seed"] = it.get("mc_seed")
        record.update(self.meta)
        self.writer.write(record)
        it["written"] = True
        if record["status"] == "ok":
            self.summary.ok += 1
            if it.get("quality"):
                self.summary.quality_referred += 1
        else:
            self.summary.failed += 1
            self.summary.errors.append((case.case_id, record["error"]))
            log.error("case %s: %s", case.case_id, record["error"])
        if len(self.summary.preview) < self.PREVIEW:
            self.summary.preview.append(record)
        if self.on_record is not None:
            self.on_record(record)


def _message(e: BaseException) -> str:
    return str(e) if isinstance(e, DrifaError) else f"{type(e).__name__}: {e}"


def _paths(out_path: Path | None, fmt: str) -> tuple[Path | None, Path | None]:
    """(JSON Lines file, CSV file) for ``--out`` and ``--format``."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {FORMATS}, got {fmt!r}")
    if fmt == "jsonl":
        return out_path, None
    if out_path is None:
        raise ConfigError("--format csv needs --out FILE.csv")
    if out_path.suffix.lower() == ".jsonl":
        raise ConfigError(f"--format csv: --out {out_path} ends in .jsonl; name the CSV file, e.g. preds.csv")
    return out_path.with_suffix(".jsonl"), out_path


def run_settings(
    summary: PredictSummary, cfg: EngineConfig, runtimes: list[Runtime], quality_action: str
) -> dict:
    """What makes two runs' numbers comparable; every line carries it and ``--resume`` checks it."""
    seedable = all(rt.seedable for rt in runtimes)
    if cfg.seed is None:
        policy = "unseeded"
    elif seedable:
        policy = "per-case (seed, case_id)"
    else:
        policy = "in-graph random (not seedable)"
    return {
        "model_sha256": summary.model_sha256,
        "runtime": summary.runtime,
        "precision": summary.precision,
        "samples": cfg.samples,
        "seed_policy": policy if not seedable or cfg.seed is None else f"{policy}, seed {cfg.seed}",
        "ensemble_size": len(runtimes),
        "input_quality_action": quality_action,
    }


_SETTING_NAMES = {
    "model_sha256": "model/build sha256",
    "runtime": "runtime",
    "precision": "precision",
    "samples": "T (--samples)",
    "seed_policy": "seed policy",
    "ensemble_size": "ensemble members",
    "input_quality_action": "input-quality action",
}


def _done_cases(jsonl: Path, resume: bool, force: bool, settings: dict[str, Any]) -> set[str]:
    """Case ids already finished in ``jsonl``; on resume, error lines are removed to run again.

    A resume is refused when the file was written with other settings (see :func:`run_settings`);
    keys a line lacks (written by an older version) are not compared, except the model hash."""
    if not jsonl.exists() or jsonl.stat().st_size == 0:
        return set()
    if force:
        jsonl.unlink()
        return set()
    if not resume:
        raise ConfigError(
            f"{jsonl} exists; pass --resume to continue it (finished cases are skipped) "
            "or --force to overwrite it"
        )
    records = read_jsonl(jsonl, repair=True)
    sha = settings["model_sha256"]
    other = {r.get("model_sha256") for r in records} - {sha}
    if other:
        raise ConfigError(
            f"{jsonl} holds predictions of another model (sha256 {sorted(map(str, other))[0][:12]}...); "
            f"this model is {sha[:12]}...; resume with the same artifact or write to another --out"
        )
    differences = []
    for key, name in _SETTING_NAMES.items():
        theirs = {json.dumps(r[key]) for r in records if key in r}
        mine = json.dumps(settings[key])
        if theirs - {mine}:
            differences.append(f"{name}: file {', '.join(sorted(theirs - {mine}))}, this run {mine}")
    if differences:
        raise ConfigError(
            f"--resume: {jsonl} was written with other settings ({'; '.join(differences)}); "
            "resume with the same settings, or write to another --out (or --force to overwrite)"
        )
    ok = [r for r in records if r.get("status") == "ok"]
    if len(ok) != len(records):
        rewrite_jsonl(jsonl, ok)
    return {r["case_id"] for r in ok}


def predict_cases(
    artifact: str | Path,
    cases: Iterable[Case],
    out_path: str | Path | None = None,
    runtime: str = "auto",
    options: RuntimeOptions | None = None,
    engine_cfg: EngineConfig | None = None,
    resume: bool = False,
    fmt: str = "jsonl",
    batch_size: int = 8,
    allow_channel_conversion: bool = False,
    force: bool = False,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    quality_action: str = "refer",
) -> PredictSummary:
    """Predict every case of ``cases`` with the model (or ensemble) in ``artifact``.

    ``out_path`` None streams JSON Lines to stdout. With ``fmt="csv"`` the JSON Lines
    go to ``out_path`` with the suffix ``.jsonl`` (the journal that ``resume`` reads)
    and the CSV view is written at the end. ``quality_action`` ("refer" or "refuse") says what
    happens to a case failing the input-quality check.
    """
    if quality_action not in QUALITY_ACTIONS:
        raise ConfigError(
            f"input-quality action must be one of {QUALITY_ACTIONS}, got {quality_action!r}"
            + suggest(quality_action, QUALITY_ACTIONS)
        )
    if batch_size < 1:
        raise ConfigError(f"batch size must be >= 1, got {batch_size}")
    options = options or RuntimeOptions()
    cfg = engine_cfg or EngineConfig()
    out_path = None if out_path is None else Path(out_path)
    jsonl, csv_path = _paths(out_path, fmt)
    if resume and jsonl is None:
        raise ConfigError("--resume needs --out FILE (the file to continue)")
    name = choose_runtime(artifact, runtime, options.precision)
    runtimes = _open_members(Path(artifact), name, options)
    try:
        card = runtimes[0].card
        sha = model_sha256(card) if len(runtimes) == 1 else ensemble_sha256([rt.card for rt in runtimes])
        summary = PredictSummary(
            jsonl, csv_path, name, options.precision, runtimes[0].device, cfg.samples, cfg.seed,
            len(runtimes), sha,
        )  # fmt: skip
        settings = run_settings(summary, cfg, runtimes, quality_action)
        done = _done_cases(jsonl, resume, force, settings) if jsonl is not None else set()
        with JsonlWriter(jsonl) as writer:
            rules = referral_rules(Path(artifact), runtimes)
            run = _Run(
                runtimes, rules, cfg, writer, summary, allow_channel_conversion, on_record, quality_action
            )
            _loop(run, cases, done, batch_size)
    finally:
        for rt in runtimes:
            rt.close()
    if csv_path is not None:
        classes = {t.name: t.classes for t in card.model.tasks}
        write_csv(csv_path, read_jsonl(jsonl, repair=False), classes)
    return summary


def _loop(run: _Run, cases: Iterable[Case], done: set[str], batch_size: int) -> None:
    seen: set[str] = set()
    pending: list[dict[str, Any]] = []
    for case in cases:
        if case.case_id in seen:
            raise ConfigError(f"case_id {case.case_id!r} given twice; case ids must be unique")
        seen.add(case.case_id)
        if case.case_id in done:
            run.summary.skipped += 1
            continue
        pending.append(run.prepare(case))
        n_good = sum("error" not in it for it in pending)
        if n_good >= batch_size or len(pending) >= 4 * batch_size:
            run.run_batch(pending)
            pending = []
    if pending:
        run.run_batch(pending)
