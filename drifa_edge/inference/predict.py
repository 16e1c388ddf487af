"""Prediction over files: read and preprocess each case as its model card says, run
the MC engine on batches of good cases (:class:`~drifa_edge.inference.predictor.Predictor`),
and write one JSON line per case as soon as its batch is done.

A bad case (unreadable, corrupt, empty, NaN, too large, missing modality, wrong
channel count) becomes an error line naming the file and a message on stderr;
the batch goes on. Output lines are fsynced one by one, so a killed run keeps
every finished case and ``resume`` runs only the others (cases that ended in an
error are tried again). ``PredictSummary.exit_code`` is 9 when any case failed.

Channels: a file whose channel count differs from the card's is reported, not
converted, unless the card or the caller allows it; a gray image stored as RGB is gray
(see ``inference.case_inputs``). Every line records per task how its file was read
(``read``: decoder, what was stored, transforms) and its input quality; a case whose image
fails the input-quality check is referred with reason ``input_quality`` (or, with
``quality_action="refuse"``, an error line).

Resume: every line carries the run's settings (model/build sha256, runtime, precision, T,
seed policy, ensemble size, input-quality action: ``predictor.run_settings``); a resume
whose settings differ from the file's is refused, naming each difference, so one file
never mixes two kinds of numbers.
Seeds: see :mod:`drifa_edge.inference.predictor`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drifa_edge._moved import forward
from drifa_edge.artifact.ensemble import resolve_members
from drifa_edge.errors import PARTIAL_FAILURE_EXIT, ConfigError
from drifa_edge.inference.engine import EngineConfig
from drifa_edge.inference.manifest import Case
from drifa_edge.inference.predictor import Predictor, PreparedCase, choose_runtime
from drifa_edge.inference.writers import JsonlWriter, read_jsonl, rewrite_jsonl, write_csv
from drifa_edge.runtimes.base import RuntimeOptions

log = logging.getLogger(__name__)
# referral_rules, WEIGHTS_FILE, PARTIAL_FAILURE_EXIT moved (warns; goes next release)
__getattr__ = forward(
    "drifa_edge.inference.predict",
    "drifa_edge.inference.predictor",
    "drifa_edge.errors",
    "drifa_edge.artifact.checkpoint",
)

FORMATS = ("jsonl", "csv")
__all__ = ["FORMATS", "PredictSummary", "choose_runtime", "predict_cases", "resolve_members"]


PREVIEW = 50  # records kept in PredictSummary.preview


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

    A resume is refused when the file was written with other settings (see
    ``predictor.run_settings``); keys a line lacks (an older version wrote it) are not compared."""
    sha = settings["model_sha256"]
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
    other = {r.get("model_sha256") for r in records} - {sha}
    if other:
        raise ConfigError(
            f"{jsonl} holds predictions of another model (sha256 {sorted(map(str, other))[0][:12]}...); "
            f"this model is {sha[:12]}...; resume with the same artifact or write to another --out"
        )
    differences = []
    for key, name in _SETTING_NAMES.items():
        theirs = {json.dumps(r[key]) for r in records if key in r} - {json.dumps(settings[key])}
        if theirs:
            differences.append(
                f"{name}: file {', '.join(sorted(theirs))}, this run {json.dumps(settings[key])}"
            )
    # adaptive T: absent = fixed T, so a fixed-T file and an adaptive run differ too
    theirs = {json.dumps(r.get("adaptive")) for r in records} - {json.dumps(settings.get("adaptive"))}
    if theirs:
        differences.append(
            f"adaptive T: file {', '.join(sorted(theirs))}, this run {json.dumps(settings.get('adaptive'))}"
        )
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
    and the CSV view is written at the end. ``quality_action`` ("refer" or "refuse") says
    what happens to a case whose image fails the input-quality check.
    """
    if batch_size < 1:
        raise ConfigError(f"batch size must be >= 1, got {batch_size}")
    options = options or RuntimeOptions()
    cfg = engine_cfg or EngineConfig()
    out_path = None if out_path is None else Path(out_path)
    jsonl, csv_path = _paths(out_path, fmt)
    if resume and jsonl is None:
        raise ConfigError("--resume needs --out FILE (the file to continue)")
    with Predictor.open(
        artifact, runtime, options, cfg, allow_channel_conversion, quality_action
    ) as predictor:
        card = predictor.card
        done = _done_cases(jsonl, resume, force, predictor.settings) if jsonl is not None else set()
        if isinstance(cases, Sequence) and len(cases) > len(done):
            predictor.compile_for(min(batch_size, len(cases) - len(done)))
        summary = PredictSummary(
            jsonl, csv_path, predictor.runtime, options.precision, predictor.device, cfg.samples, cfg.seed,
            predictor.ensemble_size, predictor.sha256,
        )  # fmt: skip
        with JsonlWriter(jsonl) as writer:

            def write(records: list[dict[str, Any]]) -> None:
                for record in records:
                    writer.write(record)
                    _count(summary, record)
                    if on_record is not None:
                        on_record(record)

            _loop(predictor, cases, done, batch_size, summary, write)
    if csv_path is not None:
        classes = {t.name: t.classes for t in card.model.tasks}
        write_csv(csv_path, read_jsonl(jsonl, repair=False), classes)
    return summary


def _count(summary: PredictSummary, record: dict[str, Any]) -> None:
    if record["status"] == "ok":
        summary.ok += 1
        if any((t.get("referral") or {}).get("reason") == "input_quality" for t in record["tasks"].values()):
            summary.quality_referred += 1
    else:
        summary.failed += 1
        summary.errors.append((record["case_id"], record["error"]))
        log.error("case %s: %s", record["case_id"], record["error"])
    if len(summary.preview) < PREVIEW:
        summary.preview.append(record)


def _loop(
    predictor: Predictor,
    cases: Iterable[Case],
    done: set[str],
    batch_size: int,
    summary: PredictSummary,
    write: Callable[[list[dict[str, Any]]], None],
) -> None:
    seen: set[str] = set()
    pending: list[PreparedCase] = []
    for case in cases:
        if case.case_id in seen:
            raise ConfigError(f"case_id {case.case_id!r} given twice; case ids must be unique")
        seen.add(case.case_id)
        if case.case_id in done:
            summary.skipped += 1
            continue
        pending.append(predictor.prepare(case))
        n_good = sum(it.ok for it in pending)
        if n_good >= batch_size or len(pending) >= 4 * batch_size:
            write(predictor.predict_prepared(pending))
            pending = []
    if pending:
        write(predictor.predict_prepared(pending))
