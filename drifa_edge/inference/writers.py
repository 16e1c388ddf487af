"""Prediction output that survives a kill: JSON Lines appended and fsynced one
line at a time, read back for ``--resume``, and a CSV view written atomically.

A run killed mid-write leaves at most one partial last line (no trailing
newline); :func:`read_jsonl` drops it so the case runs again. Every complete line
is a finished case. The CSV is derived from the JSON Lines file, never the
other way round, and replaces its previous version in one rename.

Numbers are written with 6 significant digits. ``refer`` is null when the card
has no fitted threshold for the task (undecided, not "do not refer"), and true with
``referral.reason = "input_quality"`` when the task's image failed the input-quality
check (whatever the uncertainty); ``referral.reason`` is "uncertainty" for a referral by
the fitted threshold and null otherwise. The model
hash is the sha256 of the one file a card vouches for (``sha256sum
model.safetensors``), or of the ``sha256sum``-style listing of all of them (an
export folder), or for an ensemble of its members' hashes.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO, TypedDict

import numpy as np

from drifa_edge.artifact.atomic import atomic_write, fsync_dir
from drifa_edge.artifact.card import ModelCard, ReferralRule
from drifa_edge.errors import ArtifactError, ConfigError
from drifa_edge.metrics.uncertainty import refer, referral_score

# Scalar fields of each task in the CSV, then one column per class for p and std.
TASK_FIELDS = ("predicted", "confidence", "predictive_entropy", "expected_entropy", "mutual_information")
META_FIELDS = (
    "model_sha256",
    "runtime",
    "precision",
    "device",
    "samples",
    "seed",
    "seed_policy",
    "mc_seed",
    "mc_samples_used",
    "mc_stop",
    "ensemble_size",
    "input_quality_action",
    "drifa_edge_version",
)


# ------------------------------------------------------------------ what a line holds


class _Referral(TypedDict):
    metric: str | None
    threshold: float | None  # None: no threshold fitted, ``refer`` is None (undecided)
    score: float | None
    # why the case is referred: "uncertainty", "input_quality", "ood" (see apply_ood), or None
    reason: str | None


class Referral(_Referral, total=False):
    input_quality: list[str]  # the input-quality problems, when they forced the referral


class _TaskResult(TypedDict):
    """One task's result in a record; probabilities and std per class name, entropies in nats."""

    predicted: str
    confidence: float
    probabilities: dict[str, float]
    std: dict[str, float]
    predictive_entropy: float
    expected_entropy: float
    mutual_information: float
    refer: bool | None
    referral: Referral


class TaskResult(_TaskResult, total=False):
    """With an OOD density (``ood.npz``): ``ood_score`` (squared Mahalanobis distance),
    ``ood_threshold`` and ``ood`` (see :func:`apply_ood`)."""

    ood_score: float
    ood_threshold: float
    ood: bool


class _Record(TypedDict):
    case_id: str
    status: str  # "ok" | "error"
    error: str | None
    tasks: dict[str, TaskResult] | None  # None for an error record
    inputs: dict[str, str | None]
    mc_seed: int | None  # the case's mask seed (seedable runtimes), else None
    # the run metadata (Predictor.meta), the same on every record of a run
    model_sha256: str
    runtime: str
    precision: str
    device: str
    samples: int
    seed_policy: str  # how the MC masks were seeded (what --resume compares)
    ensemble_size: int
    input_quality_action: str  # "refer" or "refuse"
    seed: int | None
    rows_per_call: int
    drifa_edge_version: str


class PredictRecord(_Record, total=False):
    """One JSON line of ``drifa-edge predict`` (keys in this order; ``read`` when the case's
    files were read: per task the decoder, transforms and input-quality verdict;
    ``channel_conversion`` only when a file's channels were converted)."""

    read: dict[str, dict[str, Any]]
    channel_conversion: dict[str, str]
    # adaptive T only (EngineConfig.adaptive): draws per member the answer rests on, why the
    # draws stopped ("settled" before T_max, or "max_samples"), and the run's adaptive settings
    mc_samples_used: int | None
    mc_stop: str | None
    adaptive: dict[str, Any]


def _num(x: float) -> float:
    return float(f"{float(x):.6g}")


def task_result(
    card: ModelCard,
    task: str,
    summary: Mapping[str, np.ndarray],
    i: int,
    rule: ReferralRule | None,
    quality_issues: Sequence[str] | None = None,
) -> TaskResult:
    """The JSON result of one task for case ``i`` of a summarized batch; ``quality_issues``
    (the input-quality problems of its image) force a referral with reason ``input_quality``."""
    classes = card.model.tasks[card.task_names.index(task)].classes
    out = {
        "predicted": classes[int(summary["predicted"][i])],
        "confidence": _num(summary["confidence"][i]),
        "probabilities": {c: _num(p) for c, p in zip(classes, summary["mean"][i], strict=True)},
        "std": {c: _num(s) for c, s in zip(classes, summary["std"][i], strict=True)},
        "predictive_entropy": _num(summary["predictive_entropy"][i]),
        "expected_entropy": _num(summary["expected_entropy"][i]),
        "mutual_information": _num(summary["mutual_information"][i]),
    }
    if rule is None or not np.isfinite(rule.threshold):
        out["refer"] = None  # no threshold fitted: undecided, not "do not refer"
        out["referral"] = {"metric": rule.metric if rule else None, "threshold": None, "score": None}
    else:
        score = float(referral_score(summary, rule.metric)[i])
        out["refer"] = bool(refer(np.array([score]), rule.threshold)[0])
        out["referral"] = {"metric": rule.metric, "threshold": _num(rule.threshold), "score": _num(score)}
    out["referral"]["reason"] = "uncertainty" if out["refer"] else None
    if quality_issues:
        out["refer"] = True
        out["referral"]["reason"] = "input_quality"
        out["referral"]["input_quality"] = list(quality_issues)
    return out


def apply_ood(result: TaskResult, score: float, threshold: float) -> TaskResult:
    """Add the OOD score to one task's result: ``ood_score`` (squared Mahalanobis distance,
    >= 0), ``ood_threshold``, ``ood`` (score > threshold). An OOD case is referred
    (``refer = true``) with ``referral.reason = "ood"``, unless an input-quality reason is
    already there (the more basic failure is named)."""
    flagged = bool(refer(np.array([score]), threshold)[0])
    result["ood_score"] = _num(score)
    result["ood_threshold"] = _num(threshold)
    result["ood"] = flagged
    if flagged:
        result["refer"] = True
        if result["referral"].get("reason") != "input_quality":
            result["referral"]["reason"] = "ood"
    return result


def model_sha256(card: ModelCard) -> str:
    """The sha256 of the one file a card vouches for, or of its ``sha256sum``-style listing."""
    if not card.files:
        raise ArtifactError("the model card lists no files, so the model cannot be identified")
    if len(card.files) == 1:
        return next(iter(card.files.values()))
    listing = "".join(f"{sha}  {rel}\n" for rel, sha in sorted(card.files.items()))
    return hashlib.sha256(listing.encode()).hexdigest()


def ensemble_sha256(cards: Sequence[ModelCard]) -> str:
    """The sha256 of an ensemble: of its members' hashes, in member order."""
    listing = "".join(f"{model_sha256(card)}  member-{k}\n" for k, card in enumerate(cards))
    return hashlib.sha256(listing.encode()).hexdigest()


# ------------------------------------------------------------------ files


def dumps(record: Mapping[str, Any]) -> str:
    """One strict-JSON line (NaN and Inf refused: a consumer must be able to parse it)."""
    return json.dumps(record, allow_nan=False, separators=(",", ":"), ensure_ascii=False)


class JsonlWriter:
    """Appends records to a file (flush + fsync per line) or streams them to stdout."""

    def __init__(self, path: Path | None, stream: TextIO | None = None) -> None:
        self.path = path
        self._stream = stream
        self._file = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            created = not path.exists()
            self._file = open(path, "ab")  # noqa: SIM115 - closed in close()
            if created:
                fsync_dir(path.parent)

    def write(self, record: Mapping[str, Any]) -> None:
        line = dumps(record) + "\n"
        if self._file is None:
            stream = self._stream or sys.stdout
            stream.write(line)
            stream.flush()
            return
        try:
            self._file.write(line.encode("utf-8"))
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as e:  # disk full, device gone: name the file (write errors carry no path)
            raise _with_path(e, self.path) from e

    def close(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            try:
                file.close()
            except OSError as e:  # the last buffered bytes could not be written
                raise _with_path(e, self.path) from e

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_jsonl(path: Path, repair: bool = True) -> list[dict[str, Any]]:
    """Complete records of a predictions file. A partial last line (a killed run) is
    dropped, and with ``repair`` cut off the file so appends start on a fresh line."""
    if not path.exists():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1  # bytes after the last newline belong to an unfinished line
    if end < len(data) and repair:
        with open(path, "r+b") as f:
            f.truncate(end)
            f.flush()
            os.fsync(f.fileno())
    records = []
    for number, line in enumerate(data[:end].decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ConfigError(
                f"{path}, line {number}: not valid JSON ({e}); this is not a drifa-edge predictions file "
                "or it was edited. Pass another --out, or --force to overwrite it"
            ) from e
        if not isinstance(record, dict) or "case_id" not in record or "status" not in record:
            raise ConfigError(
                f"{path}, line {number}: not a drifa-edge prediction (no case_id/status); pass another --out"
            )
        records.append(record)
    return records


def rewrite_jsonl(path: Path, records: Iterable[Mapping[str, Any]]) -> None:
    """Replace ``path`` with ``records`` atomically (temp file + fsync + rename)."""
    try:
        atomic_write(path, "".join(dumps(r) + "\n" for r in records))
    except OSError as e:
        raise _with_path(e, path) from e


def csv_columns(classes: Mapping[str, Sequence[str]]) -> list[str]:
    """CSV header for tasks -> class names."""
    cols = ["case_id", "status", "error"]
    for task, names in classes.items():
        cols += [f"{task}_{f}" for f in TASK_FIELDS]
        cols += [
            f"{task}_refer",
            f"{task}_refer_reason",
            f"{task}_referral_metric",
            f"{task}_referral_threshold",
        ]
        cols += [f"{task}_ood_score", f"{task}_ood"]
        cols += [f"{task}_p_{c}" for c in names] + [f"{task}_std_{c}" for c in names]
    return cols + list(META_FIELDS)


def record_to_row(record: Mapping[str, Any], classes: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """Flatten one JSON record into CSV cells (empty cells for an error line)."""
    row: dict[str, Any] = {k: record.get(k) for k in ("case_id", "status", "error", *META_FIELDS)}
    for task, names in classes.items():
        t = (record.get("tasks") or {}).get(task)
        if not t:
            continue
        for f in TASK_FIELDS:
            row[f"{task}_{f}"] = t.get(f)
        row[f"{task}_refer"] = t.get("refer")
        row[f"{task}_refer_reason"] = (t.get("referral") or {}).get("reason")
        row[f"{task}_referral_metric"] = (t.get("referral") or {}).get("metric")
        row[f"{task}_referral_threshold"] = (t.get("referral") or {}).get("threshold")
        row[f"{task}_ood_score"] = t.get("ood_score")
        row[f"{task}_ood"] = t.get("ood")
        for c in names:
            row[f"{task}_p_{c}"] = t["probabilities"].get(c)
            row[f"{task}_std_{c}"] = t["std"].get(c)
    return row


def write_csv(path: Path, records: Iterable[Mapping[str, Any]], classes: Mapping[str, Sequence[str]]) -> None:
    """Write the CSV view of ``records`` atomically; tasks -> class names fix the columns."""
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=csv_columns(classes), extrasaction="ignore", lineterminator="\n"
    )
    writer.writeheader()
    for record in records:
        writer.writerow({k: "" if v is None else v for k, v in record_to_row(record, classes).items()})
    try:
        atomic_write(path, buffer.getvalue())
    except OSError as e:  # disk full, read-only: name the file
        raise _with_path(e, path) from e


def _with_path(e: OSError, path: Path) -> OSError:
    """``e`` with ``path`` as its file name, so the message can name the file."""
    if e.filename is not None:
        return e
    return type(e)(e.errno, e.strerror or str(e), str(path))
