"""`drifa-edge demo`: the whole pipeline on the built-in synthetic set."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from drifa_edge.cli.app import THREADS_HELP, app
from drifa_edge.cli.text import plain, require_folder


@app.command()
def demo(
    out: Path = typer.Option(Path("demo-out"), "--out", help="fresh folder for everything the demo makes"),
    epochs: int = typer.Option(None, "--epochs", help="training epochs (default: the demo recipe's 15)"),
    samples: int = typer.Option(30, "--samples", "-T", help="MC samples per case"),
    threads: int = typer.Option(None, "--threads", min=1, help=THREADS_HELP),
) -> None:
    """Train, export (ONNX + OpenVINO), quantize to INT8, check drift, predict and bench, end to end."""
    from drifa_edge.demo import run_demo
    from drifa_edge.runtimes.threads import use_threads

    use_threads(threads)

    require_folder(out)
    console = Console()
    result = run_demo(
        out, epochs=epochs, samples=samples, log=lambda m: console.print(f"[bold cyan]{plain(m)}[/]")
    )
    if result.bench is not None:
        from drifa_edge.bench.table import bench_table

        console.print(bench_table(result.bench))
    table = Table(title="drifa-edge demo: summary")
    for col in ("step", "seconds", "result"):
        table.add_column(col)
    for step, info in result.steps.items():
        detail = {k: v for k, v in info.items() if k not in ("seconds", "checks")}
        table.add_row(plain(step), str(info["seconds"]), plain(json.dumps(detail, default=str)[:160]))
    console.print(table)
    (out / "demo_summary.json").write_text(json.dumps(result.steps, indent=2, default=str))
