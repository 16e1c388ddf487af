"""Which files make up each case: a CSV manifest or ``task=path`` pairs.

A manifest is a CSV file with a ``case_id`` column and one column per task of
the model card, named exactly as the task (other columns, such as a label, are
ignored). Relative paths are resolved against the manifest's folder, so a
manifest travels with its images. An empty cell is a missing modality: that
case is reported as an error, the others run. Problems with the manifest as a
whole (a missing column, a duplicated or empty case id) are a ConfigError
before anything runs.

:func:`load_case` turns a case's files into model inputs as the card says.
Channels: a file whose channel count differs from the card's (gray for an RGB
task, RGB for a gray one) is reported, not converted, because for a medical
model a gray dermoscopy image usually means a wrong file. It is converted (gray
repeated to RGB, RGB to BT.601 luma) only when the card lists that count in
``data["accepted_channels"][task]`` or the caller allows conversion
(``--convert-channels``); the output line then records it. The reader drops an
alpha channel.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from drifa_edge.artifact.card import ModelCard
from drifa_edge.data.preprocess import preprocess
from drifa_edge.data.readers import read_image
from drifa_edge.errors import BadInputError, ConfigError, suggest

CASE_ID = "case_id"


@dataclass(frozen=True)
class Case:
    """One case: an id and one file per task (``None`` where the modality is missing)."""

    case_id: str
    inputs: Mapping[str, Path | None]

    def __post_init__(self) -> None:
        if not self.case_id:
            raise ConfigError("a case needs a non-empty case_id")

    def missing(self, tasks: Iterable[str]) -> list[str]:
        return [t for t in tasks if self.inputs.get(t) is None]


def read_manifest(path: str | Path, tasks: Sequence[str]) -> list[Case]:
    """Cases of a CSV manifest, in file order; see the module docstring."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"manifest {path} not found")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: tolerate Excel's BOM
            rows = list(csv.DictReader(f))
            header = list(rows[0].keys()) if rows else _header(path)
    except (UnicodeDecodeError, csv.Error) as e:
        raise ConfigError(f"manifest {path}: not a readable UTF-8 CSV file ({e})") from e
    expected = [CASE_ID, *tasks]
    for col in expected:
        if col not in header:
            raise ConfigError(
                f"manifest {path}: no column {col!r}; expected columns {expected} "
                f"(one per task of the model card), found {header}" + suggest(col, header)
            )
    if not rows:
        raise ConfigError(f"manifest {path}: no cases (only a header)")
    base = path.parent.resolve()  # absolute, so output lines and messages are unambiguous
    cases, seen = [], {}
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        case_id = (row.get(CASE_ID) or "").strip()
        if not case_id:
            raise ConfigError(f"manifest {path}, line {line}: empty case_id")
        if case_id in seen:
            raise ConfigError(
                f"manifest {path}: case_id {case_id!r} appears on lines {seen[case_id]} and {line}; "
                "case ids must be unique (results and --resume are keyed by them)"
            )
        seen[case_id] = line
        inputs = {t: _resolve((row.get(t) or "").strip(), base) for t in tasks}
        cases.append(Case(case_id, inputs))
    return cases


def parse_inputs(items: Sequence[str], tasks: Sequence[str], case_id: str | None = None) -> Case:
    """One case from ``task=path`` strings (the ``--input`` form); relative paths from the cwd."""
    if not items:
        raise ConfigError(f"no inputs; pass one --input TASK=PATH per task, tasks: {list(tasks)}")
    inputs: dict[str, Path | None] = dict.fromkeys(tasks)
    given = set()
    for item in items:
        task, sep, value = item.partition("=")
        task, value = task.strip(), value.strip()
        if not sep or not task or not value:
            raise ConfigError(f"--input {item!r}: expected TASK=PATH, e.g. {tasks[0]}=image.png")
        if task not in inputs:
            raise ConfigError(
                f"--input {item!r}: unknown task {task!r}; the model's tasks are {list(tasks)}"
                + suggest(task, tasks)
            )
        if task in given:
            raise ConfigError(f"--input: task {task!r} given twice")
        given.add(task)
        inputs[task] = Path(value)
    first = next(p for p in inputs.values() if p is not None)
    return Case(case_id or first.stem, inputs)


def accepted_channels(card: ModelCard, task: str) -> set[int]:
    """Channel counts a task takes: its own, plus those the card's data section allows."""
    extra = (card.data.get("accepted_channels") or {}).get(task, [])
    return {card.preprocess[task].channels, *(int(c) for c in extra)}


def load_case(
    case: Case, card: ModelCard, allow_channel_conversion: bool = False
) -> tuple[list[np.ndarray], dict[str, str]]:
    """Model inputs (C, S, S) per task of one case, and the channel conversions applied."""
    missing = case.missing(card.task_names)
    if missing:
        raise BadInputError(f"missing modality {', '.join(missing)}: no file given for this case")
    arrays, converted = [], {}
    for task in card.task_names:
        path = case.inputs[task]
        spec = card.preprocess[task]
        try:
            image = read_image(path)
        except BadInputError as e:
            raise BadInputError(f"{task}: {e}") from e
        have = image.shape[-1]
        if have != spec.channels:
            if not (allow_channel_conversion or have in accepted_channels(card, task)):
                raise BadInputError(
                    f"{task}: {path}: {_channels(have)} image, the model takes {_channels(spec.channels)}; "
                    "check that this is the right file, or pass --convert-channels to convert it"
                )
            converted[task] = f"{_channels(have)}->{_channels(spec.channels)}"
        arrays.append(preprocess(image, spec))
    return arrays, converted


def _channels(c: int) -> str:
    return {1: "gray", 3: "RGB"}.get(c, f"{c}-channel")


def case_seed(seed: int, case_id: str) -> int:
    """A 63-bit seed of one case's mask stream, stable across runs and machines."""
    digest = hashlib.sha256(f"{seed}:{case_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _header(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        return next(csv.reader(f), [])


def _resolve(cell: str, base: Path) -> Path | None:
    if not cell:
        return None
    p = Path(cell).expanduser()
    return p if p.is_absolute() else base / p
