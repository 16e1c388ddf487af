"""The benchmark's one table, as rich text, CSV, and the T x batch sweep.

Every view is built from :func:`flat_row`, so the terminal table and bench.csv
always hold the same numbers. Latency is per call of the first batch size (with
batch 1: what a user waits for one study with T samples); cases/s is that cell's
throughput; the sweep table shows every (T, batch) cell's cases/s.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from drifa_edge.bench.runner import BenchResult

# bench.csv columns; metrics columns per task are appended (accuracy:<task>, ...).
COLUMNS = (
    "row_id",
    "runtime",
    "precision",
    "device",
    "status",
    "reason",
    "size_mb",
    "load_s",
    "samples",
    "batch",
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    "latency_min_ms",
    "cases_per_s",
    "speedup",
    "peak_rss_mb",
    "accuracy",
    "macro_f1",
    "ece",
    "gate",
)
METRICS = ("accuracy", "macro_f1", "ece")


def main_cell(row: dict[str, Any]) -> dict[str, Any] | None:
    """The (first T, first batch) cell: the one the table shows."""
    sweep = row.get("sweep") or []
    return sweep[0] if sweep else None


def _metric(row: dict[str, Any], name: str, tasks: tuple[str, ...]) -> tuple[Any, dict[str, Any]]:
    """Mean over tasks (the CSV's summary column) and the per-task values; or the reason there are none."""
    metrics = row.get("metrics")
    if metrics is None:
        return row.get("metrics_reason", ""), {}
    if isinstance(metrics, str):
        return metrics, {}
    per_task = {t: metrics[t][name] for t in tasks if t in metrics}
    mean = sum(per_task.values()) / len(per_task) if per_task else ""
    return mean, per_task


def flat_row(row: dict[str, Any], tasks: tuple[str, ...]) -> dict[str, Any]:
    """One row as the flat dict of bench.csv (numbers unrounded, '' where not measured)."""
    cell = main_cell(row)
    out: dict[str, Any] = {c: "" for c in COLUMNS}
    for key in ("row_id", "runtime", "precision", "device", "status", "reason"):
        out[key] = row.get(key, "")
    if "size_bytes" in row:
        out["size_mb"] = row["size_bytes"] / 1e6
    out["load_s"] = row.get("load_s", "")
    out["peak_rss_mb"] = row.get("peak_rss_mb", "")
    if cell is not None:
        out.update(
            samples=cell["samples"],
            batch=cell["batch"],
            latency_p50_ms=cell["call_ms"]["p50"],
            latency_p95_ms=cell["call_ms"]["p95"],
            latency_p99_ms=cell["call_ms"]["p99"],
            latency_min_ms=cell["call_ms"]["min"],
            cases_per_s=cell["cases_per_s"],
            speedup="" if cell.get("speedup") is None else cell["speedup"],
        )
    for name in METRICS:
        out[name], per_task = _metric(row, name, tasks)
        for task in tasks:
            out[f"{name}:{task}"] = per_task.get(task, "")
    out["gate"] = (
        row.get("gate", {}).get("verdict", "") if isinstance(row.get("gate"), dict) else row.get("gate", "")
    )
    return out


def csv_columns(tasks: tuple[str, ...]) -> list[str]:
    return list(COLUMNS) + [f"{m}:{t}" for m in METRICS for t in tasks]


def write_csv(result: BenchResult, path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=csv_columns(result.tasks))
        writer.writeheader()
        for row in result.rows:
            writer.writerow(flat_row(row, result.tasks))


def _num(value: Any, fmt: str) -> str:
    return "" if value in ("", None) else format(value, fmt)


def _status(row: dict[str, Any], footnotes: list[str]) -> str:
    """'ok', or 'skipped [n]' / 'failed [n]' with the reason as footnote n (shared by equal reasons)."""
    status = row.get("status", "")
    colour = {"ok": "green", "skipped": "yellow", "failed": "red"}.get(status, "white")
    reason = row.get("reason", "")
    if status == "ok" or not reason:
        return f"[{colour}]{status}[/]"
    if reason not in footnotes:
        footnotes.append(reason)
    return f"[{colour}]{status}[/] [{footnotes.index(reason) + 1}]"


def _gate(row: dict[str, Any]) -> str:
    """'pass', 'reference', or 'fail (first failed criterion +n more)'; the rest is in bench.json."""
    gate = row.get("gate", "")
    if not isinstance(gate, dict):
        return escape(str(gate))
    failures = gate.get("failures") or []
    if gate.get("verdict") != "fail" or not failures:
        return escape(str(gate.get("verdict", "")))
    more = f" +{len(failures) - 1}" if len(failures) > 1 else ""
    return f"[red]fail[/] ({escape(failures[0])}{more})"


def _per_task(row: dict[str, Any], name: str, tasks: tuple[str, ...], fmt: str) -> str:
    value, per_task = _metric(row, name, tasks)
    if per_task:
        return "/".join(format(per_task[t], fmt) for t in tasks if t in per_task)
    return str(value)


def bench_table(result: BenchResult) -> Table:
    """The main table: one line per row (first T, first batch)."""
    cfg = result.config
    quality = bool(cfg.data)
    title = (
        f"drifa-edge bench: T={cfg.samples[0]}, batch {cfg.batches[0]}, latency per call "
        f"(speed-up = authors' p50 / row p50)"
    )
    table = Table(title=title, title_justify="left")
    heads = [
        "runtime",
        "prec.",
        "device",
        "status",
        "size MB",
        "load s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "cases/s",
        "speed-up",
        "peak RSS MB",
    ]
    if quality:
        heads += ["accuracy", "macro-F1", "ECE", "gate vs " + (result.reference or "FP32")]
    text_columns = ("runtime", "prec.", "device", "status")
    for h in heads:
        # names never wrap; on a narrow terminal the number columns give way
        table.add_column(
            h,
            justify="left" if h in text_columns else "right",
            no_wrap=h in text_columns[:2],
            overflow="fold",
        )
    footnotes: list[str] = []
    for row in result.rows:
        flat = flat_row(row, result.tasks)
        line = [
            escape(str(flat["runtime"])),
            escape(str(flat["precision"])),
            escape(str(flat["device"])),
            _status(row, footnotes),
            _num(flat["size_mb"], ".1f"),
            _num(flat["load_s"], ".2f"),
            _num(flat["latency_p50_ms"], ".1f"),
            _num(flat["latency_p95_ms"], ".1f"),
            _num(flat["latency_p99_ms"], ".1f"),
            _num(flat["cases_per_s"], ".2f"),
            "" if flat["speedup"] == "" else f"{flat['speedup']:.2f}x",
            _num(flat["peak_rss_mb"], ".0f"),
        ]
        if quality:
            line += [
                _per_task(row, "accuracy", result.tasks, ".3f"),
                _per_task(row, "macro_f1", result.tasks, ".3f"),
                _per_task(row, "ece", result.tasks, ".3f"),
                _gate(row),
            ]
        table.add_row(*line)
    caption = [f"[{i}] {escape(reason)}" for i, reason in enumerate(footnotes, 1)]
    if quality and len(result.tasks) > 1:
        caption.append("accuracy, macro-F1, ECE per task: " + escape(" / ".join(result.tasks)))
    if caption:
        table.caption = "\n".join(caption)
        table.caption_justify = "left"
    return table


def sweep_table(result: BenchResult) -> Table | None:
    """cases/s of every (T, batch) cell, with the speed-up over the authors' way; None for one cell."""
    cfg = result.config
    if len(cfg.samples) * len(cfg.batches) < 2:
        return None
    table = Table(title="T x batch sweep: cases/s (speed-up over the authors' way)", title_justify="left")
    table.add_column("row", no_wrap=True)
    cells = [(t, b) for t in cfg.samples for b in cfg.batches]
    for t, b in cells:
        table.add_column(f"T={t} B={b}", justify="right", overflow="fold")
    for row in result.rows:
        sweep = {(c["samples"], c["batch"]): c for c in row.get("sweep") or []}
        if not sweep:
            continue
        values = []
        for key in cells:
            c = sweep.get(key)
            if c is None:
                values.append("")
                continue
            up = "" if c.get("speedup") is None else f" ({c['speedup']:.1f}x)"
            values.append(f"{c['cases_per_s']:.2f}{up}")
        table.add_row(escape(str(row["row_id"])), *values)
    return table


def print_bench(
    result: BenchResult, console: Console | None = None, show: Callable[[Table], None] | None = None
) -> None:
    """Print the table (and the sweep when there is one) and where the files went. ``show``
    prints one table (the CLI passes its ``--format`` printer; default: ``console.print``)."""
    console = console or Console()
    show = show or console.print
    for table in (bench_table(result), sweep_table(result)):
        if table is not None:
            show(table)
    for note in result.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    if result.json_path is not None:
        console.print(
            f"wrote {escape(str(result.json_path))} and {escape(str(result.csv_path))}", highlight=False
        )
