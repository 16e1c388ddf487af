"""`drifa-edge bench`: one table of runtimes x precisions (speed, memory, accuracy, calibration)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from drifa_edge.cli import adaptive_options as A
from drifa_edge.cli.app import THREADS_HELP, app
from drifa_edge.cli.progress import Progress
from drifa_edge.cli.tables import FORMAT_HELP, print_table, resolve_format
from drifa_edge.cli.text import plain, require_folder


def _rows_of_precision(artifact: Path, runtimes: str, precision: str, err: Console) -> str:
    """``--runtimes`` items for ``--precision`` (auto: the one build auto picks)."""
    from drifa_edge.errors import ConfigError
    from drifa_edge.runtimes.base import PRECISIONS, runtime_names
    from drifa_edge.runtimes.choice import AUTO, choose_for_artifact

    if precision == AUTO:
        wanted = [r for r in runtimes.split(",") if r.strip()]
        if len(wanted) > 1:
            raise ConfigError("--precision auto picks one build: give at most one runtime in --runtimes")
        choice = choose_for_artifact(artifact, wanted[0] if wanted else AUTO)
        err.print(f"--precision auto: {plain(choice.reason)}", highlight=False)
        return f"{choice.runtime}:{choice.precision}"
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision must be auto or one of {PRECISIONS}, got {precision!r}")
    names = [r.strip() for r in runtimes.split(",") if r.strip()] or list(runtime_names())
    return ",".join(f"{name.partition(':')[0]}:{precision}" for name in names)


@app.command()
def bench(
    artifact: Path = typer.Argument(..., help="checkpoint folder or export folder"),
    runtimes: str = typer.Option(
        "",
        "--runtimes",
        help="comma list: authors, torch, onnxruntime, openvino, tensorrt, or name:precision "
        "(e.g. openvino:int8, torch:bf16); default: every row the artifact has",
    ),
    batch: str = typer.Option("1", "--batch", help="cases per call, comma list (the first is the table's)"),
    samples: str = typer.Option(
        "30", "--samples", help="MC samples T, comma list (the first is the table's)"
    ),
    data: list[str] = typer.Option(
        [],
        "--data",
        help="TASK=PATH once per task (or 'synthetic'): adds accuracy, macro-F1, ECE, drift gate",
    ),
    split: str = typer.Option("test", help="split of --data to evaluate"),
    limit: int = typer.Option(None, help="evaluate at most this many --data cases"),
    out: Path = typer.Option(None, "--out", help="folder for bench.json and bench.csv"),
    checkpoint: Path = typer.Option(
        None, help="checkpoint of an export folder, for the torch and authors' rows"
    ),
    repeats: int = typer.Option(20, help="timed calls per (T, batch) cell"),
    warmup: int = typer.Option(3, help="untimed calls before timing each cell"),
    budget: float = typer.Option(
        60.0, help="seconds per cell after which repeating stops (once --min-repeats)"
    ),
    min_repeats: int = typer.Option(3, help="timed calls per cell even past --budget"),
    rounds: int = typer.Option(
        1, help="run all rows this many times in alternating order and pool the timings (shared machines)"
    ),
    timeout: float = typer.Option(1800.0, help="seconds before a row's subprocess is killed"),
    threads: int = typer.Option(None, "--threads", min=1, help=THREADS_HELP + ", per row"),
    streams: int = typer.Option(
        None,
        help="parallel requests a suffix call is split over (OpenVINO CPU; default one per thread, at most 4)",
    ),
    device: str = typer.Option(None, help="device for every row (runtime-specific name)"),
    max_rows: int = typer.Option(32, help="suffix rows per runtime call in the engine"),
    policy: str = typer.Option(None, help="drift policy TOML or profile name (default: the gate's defaults)"),
    seed: int = typer.Option(0, help="seed of the MC masks and the random timing inputs"),
    adaptive: bool = typer.Option(
        False,
        "--adaptive",
        help="also time adaptive T against fixed T (the first --samples) case by case: p50/p95/p99 "
        "latency, suffix rows per case",
    ),
    adaptive_cases: int = typer.Option(20, "--adaptive-cases", help="cases timed one by one for --adaptive"),
    min_samples: int = A.MIN_SAMPLES,
    block: int = A.BLOCK,
    error_rate: float = A.ERROR_RATE,
    stop_rule: str = A.STOP_RULE,
    se_tolerance: float = A.SE_TOLERANCE,
    precision: str = typer.Option(
        None,
        "--precision",
        help="only rows of this precision (fp32, bf16, fp16, int8), or auto: the build --precision auto "
        "picks on this CPU (model card record of 'check --write-card'); default: every row",
    ),
    fmt: str = typer.Option("auto", "--format", help=FORMAT_HELP + " (bench.json's content)"),
) -> None:
    """Benchmark every runtime x precision of ARTIFACT, each row in its own subprocess."""
    from drifa_edge.bench import print_bench, run_bench

    err = Console(stderr=True)
    console = Console()
    fmt = resolve_format(fmt, console)

    require_folder(out)
    if precision is not None:
        runtimes = _rows_of_precision(artifact, runtimes, precision, err)
    with Progress(f"benchmarking {artifact} (one subprocess per row)", err) as shown:

        def progress(row: dict) -> None:
            status = row["status"] + (f": {row.get('reason', '')}" if row["status"] != "ok" else "")
            of = f" (round {row['round']}/{row['rounds']})" if row.get("rounds", 1) > 1 else ""
            shown.line(f"{row['row_id']}{of}: {status}")

        result = run_bench(
            artifact,
            runtimes=runtimes or None,
            batches=batch,
            samples=samples,
            data=data or None,
            out=out,
            on_row=progress,
            split=split,
            limit=limit,
            checkpoint=checkpoint,
            repeats=repeats,
            warmup=warmup,
            budget_s=budget,
            min_repeats=min_repeats,
            rounds=rounds,
            timeout_s=timeout,
            threads=threads,
            streams=streams,
            device=device,
            max_rows=max_rows,
            policy=policy,
            seed=seed,
            adaptive=A.adaptive_config(adaptive, min_samples, block, error_rate, stop_rule, se_tolerance),
            adaptive_cases=adaptive_cases,
        )
    if fmt == "json":
        print(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        print_bench(result, console, show=lambda table: print_table(table, fmt, console))
