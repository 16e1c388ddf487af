"""`drifa-edge bench`: every runtime x precision of one model, each in its own subprocess.

The parent plans the rows from the artifact's layout (:mod:`~drifa_edge.bench.rows`),
runs each in ``python -m drifa_edge.bench.worker`` with a timeout, and turns the
results into one table: a crash, a hang or a missing dependency becomes that
row's status and the other rows carry on. The parent imports no runtime (it runs
with numpy alone); speed-ups are ratios to the authors' baseline row measured in
the same run, and with ``--data`` accuracy, macro-F1, ECE and the drift-gate
verdict are computed here from the probabilities every worker saved.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from drifa_edge import __version__
from drifa_edge.artifact.atomic import atomic_write
from drifa_edge.artifact.card import read_card
from drifa_edge.artifact.ensemble import ENSEMBLE_FILE
from drifa_edge.bench import quality
from drifa_edge.bench.rows import AUTHORS, BenchRow, PlannedRow, RowSpec, plan_rows, resolve_checkpoint
from drifa_edge.bench.worker import RESULT_MARKER, cell_summary
from drifa_edge.errors import ConfigError
from drifa_edge.progress import stage, step
from drifa_edge.runtimes.cpu import isa_info
from drifa_edge.runtimes.threads import available_cpus, baseline_env

if TYPE_CHECKING:
    from drifa_edge.inference.adaptive import AdaptiveConfig

log = logging.getLogger(__name__)
BENCH_FORMAT = "drifa-edge-bench/1"


@dataclass(frozen=True)
class BenchConfig:
    """One benchmark run; saved into bench.json beside the results."""

    artifact: Path
    checkpoint: Path | None = None  # for the torch rows of an export folder
    runtimes: tuple[str, ...] = ()  # "name" or "name:precision"; empty = every default row
    samples: tuple[int, ...] = (30,)  # T values; the first is the table's
    batches: tuple[int, ...] = (1,)  # cases per call; the first is the table's latency
    data: tuple[str, ...] = ()  # --data values for accuracy / calibration / drift gate
    split: str = "test"
    out: Path | None = None
    warmup: int = 3
    repeats: int = 20
    budget_s: float = 60.0  # per (T, batch) cell: stop repeating after this once min_repeats are in
    min_repeats: int = 3
    rounds: int = 1  # run the row list this many times, alternating order, and pool the timings
    timeout_s: float = 1800.0
    threads: int | None = None
    streams: int | None = None  # OpenVINO CPU streams per suffix call (RuntimeOptions.streams)
    seed: int = 0
    max_rows: int = 32
    eval_batch: int = 16
    limit: int | None = None  # at most this many --data cases
    policy: str | None = None  # drift policy TOML or profile name; None = the gate's default
    device: str | None = None
    # adaptive T: each engine row also times adaptive against fixed T = samples[0], case by case
    adaptive: AdaptiveConfig | None = None
    adaptive_cases: int = 20  # cases timed one at a time (the --data cases first, else random inputs)

    def __post_init__(self) -> None:
        if not self.samples or min(self.samples) < 1:
            raise ConfigError(f"--samples must be positive integers, got {list(self.samples)}")
        if not self.batches or min(self.batches) < 1:
            raise ConfigError(f"--batch must be positive integers, got {list(self.batches)}")
        if self.rounds < 1:
            raise ConfigError(f"--rounds must be >= 1, got {self.rounds}")
        if self.repeats < 1 or self.min_repeats < 1 or self.warmup < 0:
            raise ConfigError(
                f"--repeats and --min-repeats must be >= 1 and --warmup >= 0, got "
                f"{self.repeats}, {self.min_repeats}, {self.warmup}"
            )
        if self.timeout_s <= 0 or self.budget_s <= 0:
            raise ConfigError(f"--timeout and budget must be positive, got {self.timeout_s}, {self.budget_s}")
        if self.streams is not None and self.streams < 1:
            raise ConfigError(f"--streams must be >= 1, got {self.streams}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {self.threads}")
        if not Path(self.artifact).is_dir():
            raise ConfigError(f"{self.artifact}: not a folder; pass a checkpoint or export folder")
        if self.adaptive is not None:
            self.adaptive.looks(self.samples[0])
        if self.adaptive_cases < 1:
            raise ConfigError(f"--adaptive-cases must be >= 1, got {self.adaptive_cases}")

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(self).items()}


@dataclass
class BenchResult:
    """Every row (dicts, see benchmarks/README.md for the fields) and where they were written."""

    config: BenchConfig
    rows: list[dict[str, Any]]
    reference: str | None  # row id the drift gate compares against
    machine: dict[str, Any]
    tasks: tuple[str, ...]
    json_path: Path | None = None
    csv_path: Path | None = None
    notes: list[str] = field(default_factory=list)

    def row(self, row_id: str) -> dict[str, Any]:
        for r in self.rows:
            if r["row_id"] == row_id:
                return r
        raise KeyError(row_id)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": BENCH_FORMAT,
            "drifa_edge": __version__,
            "config": self.config.to_dict(),
            "machine": self.machine,
            "tasks": list(self.tasks),
            "baseline": AUTHORS + "-fp32",
            "reference": self.reference,
            "rows": self.rows,
            "notes": self.notes,
        }


def machine_info() -> dict[str, Any]:
    """What the numbers depend on: CPU, its ISA class and flags, cores, load at start (the
    machine may be shared)."""
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    isa = isa_info()
    return {
        "cpu": cpu,
        "isa": isa["isa"],  # the class a per-ISA card record is keyed by (runtimes.cpu)
        "cpu_flags": isa["flags"],
        "cores": os.cpu_count(),
        "cpus_available": available_cpus(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "loadavg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


# ----------------------------------------------------------------------------- subprocess per row


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def _failure(spec: RowSpec, why: str, stderr: str) -> BenchRow:
    last = _last_line(stderr)
    return {
        "row_id": spec.row_id,
        "runtime": spec.runtime,
        "precision": spec.precision,
        "status": "failed",
        "reason": why + (f"; last stderr line: {last}" if last else ""),
    }


def run_worker(spec: RowSpec, timeout_s: float, workdir: Path) -> BenchRow:
    """Run one row in a fresh interpreter; never raises for what the row does."""
    spec_file = workdir / f"{spec.row_id}-{spec.eval_seed}{'-eval' if spec.eval_only else ''}.spec.json"
    spec_file.write_text(spec.to_json())
    cmd = [sys.executable, "-m", "drifa_edge.bench.worker", "--spec", f"@{spec_file}"]
    # the authors' way runs as they ran it: without drifa-edge's passive-waiting policy
    env = baseline_env() if spec.runtime == AUTHORS else None
    # its own session: on timeout the whole group (the row and anything it started) is killed
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, env=env
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        return _failure(spec, f"failed: timeout after {timeout_s:.0f} s", stderr)
    lines = [ln for ln in stdout.splitlines() if ln.startswith(RESULT_MARKER)]
    if lines:
        result = json.loads(lines[-1][len(RESULT_MARKER) :])
        if result.get("status") == "failed":
            result["reason"] = "failed: " + result.get("reason", "")
        return result
    if proc.returncode < 0:
        try:
            name = signal.Signals(-proc.returncode).name
        except ValueError:
            name = str(-proc.returncode)
        why = f"failed: killed by signal {name}"
    else:
        why = f"failed: exit code {proc.returncode} without a result"
    return _failure(spec, why, stderr)


# ----------------------------------------------------------------------------- the benchmark


def _base_spec(cfg: BenchConfig, eval_path: str | None, workdir: Path) -> RowSpec:
    return RowSpec(
        row_id="",
        runtime="",
        precision="fp32",
        path="",
        device=cfg.device,
        samples=cfg.samples,
        batches=cfg.batches,
        warmup=cfg.warmup,
        repeats=math.ceil(cfg.repeats / cfg.rounds),
        budget_s=cfg.budget_s / cfg.rounds,
        min_repeats=math.ceil(cfg.min_repeats / cfg.rounds),
        threads=cfg.threads,
        streams=cfg.streams,
        seed=cfg.seed,
        max_rows=cfg.max_rows,
        eval_path=eval_path,
        eval_samples=cfg.samples[0],
        eval_batch=cfg.eval_batch,
        eval_seed=cfg.seed,
        out_dir=str(workdir / "probs"),
        adaptive=None if cfg.adaptive is None else cfg.adaptive.to_dict(),
        adaptive_cases=cfg.adaptive_cases,
    )


def _skipped(planned: PlannedRow) -> dict[str, Any]:
    return {
        "row_id": planned.row_id,
        "runtime": planned.runtime,
        "precision": planned.precision,
        "status": "skipped",
        "reason": planned.reason,
    }


def merge_rounds(results: list[BenchRow]) -> BenchRow:
    """One row from its rounds: timed calls pooled per cell, load time the median, RSS the max.

    A round that did not end ok makes the row that round's result (the reason says which round)."""
    for k, r in enumerate(results):
        if r["status"] != "ok":
            if k:
                r["reason"] = f"round {k + 1} of {len(results)}: {r.get('reason', '')}"
            return r
    row = dict(results[0])
    if len(results) == 1:
        return row
    row["rounds"] = len(results)
    row["load_s_rounds"] = [r["load_s"] for r in results]
    row["load_s"] = float(np.median(row["load_s_rounds"]))
    row["import_s"] = float(np.median([r["import_s"] for r in results]))
    for key in ("peak_rss_mb", "rss_after_load_mb"):
        if key in row:
            row[key] = max(r[key] for r in results)
    row["loadavg_rounds"] = [[r.get("loadavg_start"), r.get("loadavg_end")] for r in results]
    row["sweep"] = [
        cell_summary(cell["samples"], cell["batch"], [s for r in results for s in r["sweep"][i]["seconds"]])
        for i, cell in enumerate(results[0].get("sweep", []))
    ]
    return row


def run_rounds(
    planned: list[PlannedRow],
    cfg: BenchConfig,
    workdir: Path,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> list[BenchRow]:
    """Every row, ``cfg.rounds`` times, in alternating order so that a change in the
    machine's load (shared machines) falls on every row alike; evaluation in round 1 only."""
    results: dict[str, list[BenchRow]] = {p.row_id: [] for p in planned}
    runnable = sum(p.spec is not None for p in planned)
    for k in range(cfg.rounds):
        order = planned if k % 2 == 0 else planned[::-1]
        started = 0
        for p in order:
            done = results[p.row_id]
            if done and done[-1]["status"] != "ok":
                continue  # skipped or failed: not run again
            if p.spec is None:
                result = _skipped(p)
            else:
                spec = p.spec if k == 0 else dataclasses.replace(p.spec, eval_path=None)
                started += 1
                of = f" (round {k + 1} of {cfg.rounds})" if cfg.rounds > 1 else ""
                step("row", started, runnable, f"{p.row_id}{of}")
                result = run_worker(spec, cfg.timeout_s, workdir)
            if p.note:
                result["note"] = p.note
            done.append(result)
            if on_row is not None:
                on_row({**result, "round": k + 1, "rounds": cfg.rounds})
    return [merge_rounds(results[p.row_id]) for p in planned]


def add_speedups(rows: list[BenchRow]) -> None:
    """Each timed cell's speed-up over the authors' row at the same (T, batch), same run."""
    authors = next((r for r in rows if r["runtime"] == AUTHORS and r["status"] == "ok"), None)
    base = {} if authors is None else {(c["samples"], c["batch"]): c for c in authors.get("sweep", [])}
    for r in rows:
        for cell in r.get("sweep", []):
            ref = base.get((cell["samples"], cell["batch"]))
            cell["speedup"] = None if ref is None else ref["call_ms"]["p50"] / cell["call_ms"]["p50"]


def run_benchmark(cfg: BenchConfig, on_row: Callable[[dict[str, Any]], None] | None = None) -> BenchResult:
    """Run every planned row, then compute speed-ups, metrics and gate verdicts; write the files."""
    artifact = Path(cfg.artifact)
    if (artifact / ENSEMBLE_FILE).is_file():
        raise ConfigError(
            f"{artifact} is an ensemble; bench one member folder at a time (e.g. {artifact}/member-0)"
        )
    card = read_card(artifact, verify=False)  # each worker verifies the files it loads
    checkpoint, why_no_checkpoint = resolve_checkpoint(
        artifact, Path(cfg.checkpoint) if cfg.checkpoint else None, card.export
    )
    machine = machine_info()
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="drifa-bench-") as tmp:
        workdir = Path(tmp)
        labels, eval_path, why_no_quality = None, None, ""
        if cfg.data:
            stage(f"bench: preparing the --data evaluation set ({cfg.split} split)")
            labels, eval_path, why_no_quality = quality.prepare_eval_set(
                cfg.data, card, cfg.split, cfg.limit, cfg.seed, workdir
            )
        base = _base_spec(cfg, eval_path, workdir)
        planned = plan_rows(artifact, checkpoint, why_no_checkpoint, cfg.runtimes, base)
        rows = run_rounds(planned, cfg, workdir, on_row)
        add_speedups(rows)
        reference = quality.reference_row(rows) if labels is not None else None
        if labels is not None:
            stage("bench: accuracy, calibration and drift gate of every row")
            _add_quality(rows, reference, labels, cfg, workdir, planned, notes)
        elif why_no_quality:
            notes.append(why_no_quality)
            for r in rows:
                r["metrics"] = r["gate"] = why_no_quality
    machine["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    result = BenchResult(
        cfg, rows, reference["row_id"] if reference else None, machine, card.task_names, notes=notes
    )
    if cfg.out is not None:
        write_results(result, Path(cfg.out))
    return result


def _add_quality(
    rows: list[dict[str, Any]],
    reference: dict[str, Any] | None,
    labels: dict[str, np.ndarray],
    cfg: BenchConfig,
    workdir: Path,
    planned: list[PlannedRow],
    notes: list[str],
) -> None:
    """Metrics of every row with probabilities, and its gate verdict against the reference."""
    for r in rows:
        if "eval" in r:
            r["metrics"] = quality.quality_metrics(r["eval"]["probs"], labels)
    if reference is None:
        notes.append("no FP32 row produced probabilities: no drift-gate verdicts")
        return
    spec = next(p.spec for p in planned if p.row_id == reference["row_id"])
    noise_spec = dataclasses.replace(spec, eval_only=True, eval_seed=cfg.seed + 1)
    noise = run_worker(noise_spec, cfg.timeout_s, workdir)
    if noise.get("status") != "ok":
        notes.append(f"noise-floor run of {reference['row_id']} {noise.get('reason', '')}: no gate verdicts")
        return
    reference["noise_floor"] = {k: noise["eval"][k] for k in ("cases", "samples", "seed", "seconds")}
    quality.add_gate_verdicts(rows, reference, noise["eval"], labels, cfg.policy, cfg.seed)


def write_results(result: BenchResult, out: Path) -> None:
    """bench.json (everything) and bench.csv (one line per row) into ``out``."""
    from drifa_edge.bench.table import write_csv

    out.mkdir(parents=True, exist_ok=True)
    result.json_path = out / "bench.json"
    atomic_write(result.json_path, json.dumps(result.to_dict(), indent=2))
    result.csv_path = out / "bench.csv"
    write_csv(result, result.csv_path)


def _as_tuple(values: Sequence[Any] | Any | None, cast: Callable[[Any], Any]) -> tuple[Any, ...]:
    if values is None:
        return ()
    if isinstance(values, (str, int)):
        values = [values]
    out = []
    for v in values:
        out += [cast(x) for x in str(v).split(",") if x.strip()] if isinstance(v, str) else [cast(v)]
    return tuple(out)


def run_bench(
    artifact: str | Path,
    runtimes: Sequence[str] | str | None = None,
    batches: Sequence[int] | str = (1,),
    samples: Sequence[int] | str = (30,),
    data: Sequence[str] | str | None = None,
    out: str | Path | None = None,
    on_row: Callable[[dict[str, Any]], None] | None = None,
    **options: Any,
) -> BenchResult:
    """Benchmark every runtime x precision of ``artifact`` (the library form of ``drifa-edge bench``).

    ``options`` are the other :class:`BenchConfig` fields (checkpoint, repeats, warmup, timeout_s, ...).
    """
    try:
        cfg = BenchConfig(
            artifact=Path(artifact),
            runtimes=_as_tuple(runtimes, str.strip),
            batches=_as_tuple(batches, int),
            samples=_as_tuple(samples, int),
            data=_as_tuple(data, str),
            out=Path(out) if out is not None else None,
            **options,
        )
    except ValueError as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"--batch and --samples take comma-separated integers: {e}") from e
    return run_benchmark(cfg, on_row=on_row)
