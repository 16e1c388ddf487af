"""Which rows a benchmark runs: one per runtime x precision whose artifact is present.

A row is planned from the artifact folder's layout alone (no runtime is imported
here): the torch rows and the authors' baseline need a checkpoint folder, the other
runtimes the export sub-folder of their precision. A row that cannot run is kept
in the plan as *skipped* with the reason, so the table shows every runtime asked for.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

from drifa_edge.errors import ConfigError, suggest
from drifa_edge.runtimes import cpu
from drifa_edge.runtimes.base import REGISTRY

AUTHORS = "authors"  # pseudo-runtime: T sequential eager passes of the whole model, batch 1
WEIGHTS_FILE = "model.safetensors"  # training.checkpoint.WEIGHTS_FILE, without importing torch code


class SweepCell(TypedDict, total=False):
    """Timings of one (T, batch) cell of a row."""

    samples: int
    batch: int
    repeats: int
    call_ms: dict[str, float]  # mean, min, p50, p90, ... of one engine call
    cases_per_s: float
    seconds: list[float]
    speedup: float | None  # p50 of the authors' row at the same (T, batch) over this one


class _RowBase(TypedDict):
    row_id: str
    runtime: str
    precision: str


class BenchRow(_RowBase, total=False):
    """One row of bench.json as a worker returns it and the runner completes it (stays JSON).
    ``status`` ok / skipped / failed; ``reason`` says why a row did not run."""

    status: str
    reason: str
    note: str
    version: str
    device: str
    import_s: float
    load_s: float
    rss_after_load_mb: float
    peak_rss_mb: float
    loadavg_start: list[float] | None
    loadavg_end: list[float] | None
    sweep: list[SweepCell]
    eval: dict[str, Any]
    rounds: int
    load_s_rounds: list[float]
    loadavg_rounds: list[list[Any]]


@dataclass(frozen=True)
class RowKind:
    """One runtime x precision: the sub-folder it loads and whether it runs by default."""

    runtime: str
    precision: str
    folder: str  # relative to the export folder; "" = the checkpoint folder
    default: bool = True
    needs_cpu_flags: tuple[str, ...] = ()  # any one of them is enough
    label: str = ""  # the row's id when runtime-precision is not unique (TensorRT targets)

    @property
    def row_id(self) -> str:
        return self.label or f"{self.runtime}-{self.precision}"


# The order of the table. TensorRT rows come from the folders found (tensorrt-<target>-<precision>).
ROW_KINDS: tuple[RowKind, ...] = (
    RowKind(AUTHORS, "fp32", ""),
    RowKind("torch", "fp32", ""),
    RowKind("torch", "bf16", "", default=False),
    RowKind("onnxruntime", "fp32", "onnx"),
    RowKind("onnxruntime", "int8", "onnx-int8"),
    RowKind("openvino", "fp32", "openvino"),
    # bf16 is an inference hint on the fp32 IR; it only pays off with native bf16 instructions
    RowKind("openvino", "bf16", "openvino", needs_cpu_flags=("avx512_bf16", "amx_bf16")),
    RowKind("openvino", "int8", "openvino-int8"),
)
TENSORRT_PREFIX = "tensorrt-"


@dataclass(frozen=True)
class RowSpec:
    """Everything a worker subprocess needs to run one row (serialised as JSON)."""

    row_id: str
    runtime: str
    precision: str
    path: str  # the folder handed to open_runtime: the export folder, or the checkpoint (torch, authors)
    files: tuple[str, ...] = ()  # files whose size is the row's size on disk
    device: str | None = None
    hint: str = "latency"
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # RuntimeOptions.extra
    samples: tuple[int, ...] = (30,)
    batches: tuple[int, ...] = (1,)
    warmup: int = 3
    repeats: int = 20
    budget_s: float = 60.0  # per (T, batch) cell: stop repeating after this, once min_repeats are in
    min_repeats: int = 3
    threads: int | None = None
    streams: int | None = None
    seed: int = 0
    max_rows: int = 32
    eval_path: str | None = None  # npz with x0..x{M-1}: the --data cases
    eval_samples: int = 30
    eval_batch: int = 16
    eval_seed: int = 0
    out_dir: str | None = None  # where the worker writes its MC probabilities and card
    eval_only: bool = False  # the noise-floor run: no timing, evaluation only
    note: str = ""

    def __post_init__(self) -> None:
        if not self.samples or min(self.samples) < 1:
            raise ConfigError(f"samples (T) must be >= 1, got {self.samples}")
        if not self.batches or min(self.batches) < 1:
            raise ConfigError(f"batch sizes must be >= 1, got {self.batches}")
        if self.repeats < 1 or self.warmup < 0 or not 1 <= self.min_repeats:
            raise ConfigError(f"repeats must be >= 1 and warmup >= 0, got {self.repeats}, {self.warmup}")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> RowSpec:
        d = json.loads(text)
        for key in ("files", "samples", "batches"):
            d[key] = tuple(d[key])
        return cls(**d)


@dataclass(frozen=True)
class PlannedRow:
    """A row to run (``spec``) or one that is skipped before running (``reason``)."""

    row_id: str
    runtime: str
    precision: str
    spec: RowSpec | None = None
    reason: str = ""
    note: str = ""


def cpu_flags() -> set[str]:
    """The CPU feature flags of this machine (:func:`drifa_edge.runtimes.cpu.cpu_flags`)."""
    return set(cpu.cpu_flags())


def resolve_checkpoint(
    artifact: Path, checkpoint: Path | None, export: dict[str, Any]
) -> tuple[Path | None, str]:
    """The checkpoint folder for the torch rows, or None and why."""
    if checkpoint is not None:
        if not (checkpoint / WEIGHTS_FILE).is_file():
            raise ConfigError(
                f"--checkpoint {checkpoint}: no {WEIGHTS_FILE} there; pass a training output folder"
            )
        return checkpoint, ""
    if (artifact / WEIGHTS_FILE).is_file():
        return artifact, ""
    source = export.get("source_checkpoint") or (export.get("source") or {}).get("checkpoint")
    if not source:
        return None, "no checkpoint: the export card names no source checkpoint; pass --checkpoint DIR"
    for candidate in (Path(source), artifact / source):
        if (candidate / WEIGHTS_FILE).is_file():
            return candidate, ""
    return None, f"the source checkpoint {source} named in the export card is gone; pass --checkpoint DIR"


def loaded_files(folder: Path) -> tuple[str, ...]:
    """The files an MC run loads from an export sub-folder: the prefix and suffix graphs
    (``prefix.onnx``, ``suffix.xml`` + ``.bin``, ``suffix.engine``, external ``.onnx.data``);
    every file when the folder has no such names."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    graphs = [p for p in files if p.name.split(".")[0] in ("prefix", "suffix") and ".qdq." not in p.name]
    return tuple(str(p) for p in (graphs or files))


DEFAULTS = "*"  # in a selection: the runtime's default precisions


def parse_selection(items: tuple[str, ...]) -> dict[str, set[str]]:
    """``("torch", "torch:bf16", "openvino:int8")`` -> {"torch": {"*", "bf16"}, "openvino": {"int8"}}."""
    known = (AUTHORS, *REGISTRY)
    chosen: dict[str, set[str]] = {}
    for item in items:
        name, _, precision = item.strip().partition(":")
        if name not in known:
            raise ConfigError(
                f"unknown runtime {name!r} in --runtimes; choose from {list(known)}" + suggest(name, known)
            )
        chosen.setdefault(name, set()).add(precision or DEFAULTS)
    return chosen


def _wanted(kind: RowKind, chosen: dict[str, set[str]]) -> bool:
    if not chosen:
        return kind.default
    precisions = chosen.get(kind.runtime, set())
    return kind.precision in precisions or (DEFAULTS in precisions and kind.default)


def _refuse_unmatched(chosen: dict[str, set[str]], kinds: list[RowKind]) -> None:
    """A ``--runtimes`` item that selects no row is an error, not an empty table."""
    available = [f"{k.runtime}:{k.precision}" for k in kinds]
    for name, precisions in chosen.items():
        for precision in precisions - {DEFAULTS}:
            if not any(k.runtime == name and k.precision == precision for k in kinds):
                item = f"{name}:{precision}"
                raise ConfigError(
                    f"--runtimes {item} selects no row; the rows are {', '.join(available)}."
                    + suggest(item, available)
                )


def _tensorrt_kinds(export_root: Path | None) -> list[tuple[RowKind, str]]:
    """(kind, target) for every tensorrt-<target>-<precision> folder."""
    if export_root is None:
        return []
    found = []
    for folder in sorted(export_root.glob(TENSORRT_PREFIX + "*")):
        if folder.is_dir():
            target, _, precision = folder.name[len(TENSORRT_PREFIX) :].rpartition("-")
            found.append((RowKind("tensorrt", precision, folder.name, label=folder.name), target))
    return found


def runtime_module_missing(runtime: str) -> str:
    """Why a runtime's module cannot be imported (without importing it), or ''."""
    if runtime == AUTHORS:
        runtime = "torch"
    module = REGISTRY[runtime].split(":")[0]
    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        found = False
    return "" if found else f"the runtime module {module} is not installed in this drifa-edge"


def plan_rows(
    artifact: Path,
    checkpoint: Path | None,
    checkpoint_reason: str,
    selection: tuple[str, ...],
    base: RowSpec,
) -> list[PlannedRow]:
    """Every row asked for, in table order; ``base`` carries the timing settings."""
    chosen = parse_selection(selection)
    flags = cpu_flags()
    kinds = [(k, "") for k in ROW_KINDS] + _tensorrt_kinds(artifact)
    if "tensorrt" in chosen and not any(k.runtime == "tensorrt" for k, _ in kinds):
        kinds.append((RowKind("tensorrt", "fp16", TENSORRT_PREFIX + "<target>-fp16"), ""))
    _refuse_unmatched(chosen, [k for k, _ in kinds])
    rows = []
    for kind, target in kinds:
        if not _wanted(kind, chosen):
            continue
        note = f"target {target}" if target else ""
        skip = runtime_module_missing(kind.runtime)
        if kind.folder:
            folder = artifact / kind.folder
            if not skip and not folder.is_dir():
                skip = f"no {kind.folder}/ in {artifact}: export it first (drifa-edge export)"
        else:
            folder = checkpoint
            if not skip and checkpoint is None:
                skip = checkpoint_reason
        if not skip and kind.needs_cpu_flags and not flags & set(kind.needs_cpu_flags):
            skip = f"this CPU lacks {' / '.join(kind.needs_cpu_flags)}: no native {kind.precision}"
        if skip:
            rows.append(PlannedRow(kind.row_id, kind.runtime, kind.precision, reason=skip, note=note))
            continue
        if kind.folder:  # runtimes open the export folder; the precision picks the sub-folder
            path, files = artifact, loaded_files(folder)
        else:
            path, files = folder, (str(folder / WEIGHTS_FILE),)
        spec = dataclasses.replace(
            base,
            row_id=kind.row_id,
            runtime=kind.runtime,
            precision=kind.precision,
            path=str(path),
            files=files,
            extra={"target": target} if target else {},
        )
        rows.append(PlannedRow(kind.row_id, kind.runtime, kind.precision, spec=spec, note=note))
    return rows
