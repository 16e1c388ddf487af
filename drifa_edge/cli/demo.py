"""`drifa-edge demo`: the whole pipeline on the built-in synthetic set (``--quick``: train and predict)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from drifa_edge.cli.app import THREADS_HELP, app
from drifa_edge.cli.progress import Progress
from drifa_edge.cli.tables import print_table, resolve_format
from drifa_edge.cli.text import plain, require_folder


@app.command()
def demo(
    out: Path = typer.Option(Path("demo-out"), "--out", help="fresh folder for everything the demo makes"),
    epochs: int = typer.Option(None, "--epochs", help="training epochs (default: the demo recipe's 15)"),
    samples: int = typer.Option(30, "--samples", "-T", help="MC samples per case"),
    quick: bool = typer.Option(
        False,
        "--quick",
        help="a first prediction with uncertainty in about a minute: a tiny model (32 px, 3 epochs), "
        "then predict; no export, INT8, check or bench",
    ),
    replace: bool = typer.Option(
        False,
        "--replace",
        help="remove --out first when an earlier demo wrote it (never another folder)",
    ),
    threads: int = typer.Option(None, "--threads", min=1, help=THREADS_HELP),
) -> None:
    """Train, export (ONNX + OpenVINO), quantize to INT8, check drift, predict and bench, end to end."""
    from drifa_edge.cli.predict import print_summary
    from drifa_edge.demo import QUICK_RECIPE, QUICK_STEPS, STEPS, run_demo
    from drifa_edge.runtimes.threads import use_threads

    use_threads(threads)

    require_folder(out)
    console, err = Console(), Console(stderr=True)
    fmt = resolve_format("auto", console)
    with Progress("drifa-edge demo" + (" --quick" if quick else ""), err) as shown:
        result = run_demo(
            out,
            epochs=epochs,
            samples=samples,
            steps=QUICK_STEPS if quick else STEPS,
            log=shown.line,
            recipe=QUICK_RECIPE if quick else None,
            replace=replace,
        )
    if result.predictions is not None:
        print_summary(result.predictions, console)
    if result.bench is not None:
        from drifa_edge.bench.table import bench_table

        print_table(bench_table(result.bench), fmt, console)
    table = Table(title="drifa-edge demo: summary")
    for col in ("step", "seconds", "result"):
        table.add_column(col)
    for step, info in result.steps.items():
        detail = {k: v for k, v in info.items() if k not in ("seconds", "checks")}
        table.add_row(plain(step), str(info["seconds"]), plain(json.dumps(detail, default=str)[:160]))
    print_table(table, fmt, console)
    (out / "demo_summary.json").write_text(json.dumps(result.steps, indent=2, default=str))
    if quick:
        console.print(
            "next: the full demo (export, INT8, drift check, bench): make demo, or drifa-edge demo --out demo-out",
            highlight=False,
            soft_wrap=True,
        )
