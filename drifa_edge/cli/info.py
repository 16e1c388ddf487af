"""`drifa-edge info`: installed runtimes, versions and the devices each sees; the CPU's ISA
class, the precision recommended for it, and (with an artifact) what ``--precision auto`` picks."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from drifa_edge import __version__
from drifa_edge.cli.app import app
from drifa_edge.cli.tables import FORMAT_HELP, print_table, resolve_format
from drifa_edge.runtimes.base import probe_runtime, runtime_names
from drifa_edge.runtimes.cpu import isa_info
from drifa_edge.runtimes.threads import available_cpus, default_threads


def collect_info(artifact: Path | None = None) -> dict:
    cpu = isa_info()
    cpu["cpus_available"] = available_cpus()
    cpu["default_threads"] = default_threads()
    data = {
        "drifa-edge": __version__,
        "runtimes": {n: probe_runtime(n) for n in runtime_names()},
        "cpu": cpu,
    }
    if artifact is not None:
        from drifa_edge.runtimes.choice import choose_for_artifact

        choice = choose_for_artifact(artifact)
        data["precision_auto"] = {
            "artifact": str(artifact),
            "runtime": choice.runtime,
            "precision": choice.precision,
            "reason": choice.reason,
        }
    return data


@app.command()
def info(
    artifact: Path = typer.Argument(
        None, help="optional checkpoint or export folder: also show what --precision auto picks here"
    ),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table (same as --format json)"),
    fmt: str = typer.Option("auto", "--format", help=FORMAT_HELP),
) -> None:
    """List installed runtimes, their versions and devices; the CPU's ISA and the precision to use."""
    console = Console()
    fmt = "json" if as_json else resolve_format(fmt, console)  # a bad --format exits 2 first
    data = collect_info(artifact)
    if fmt == "json":
        print(json.dumps(data, indent=2))
        return
    table = Table(title=f"drifa-edge {__version__}: runtimes")
    for col in ("runtime", "available", "version", "devices", "note"):
        table.add_column(col)
    for name, r in data["runtimes"].items():
        table.add_row(
            escape(name),
            "yes" if r.get("available") else "no",
            escape(str(r.get("version", ""))),
            escape(", ".join(r.get("devices", []))),
            escape(str(r.get("reason", r.get("note", "")))),
        )
    print_table(table, fmt, console)
    cpu = data["cpu"]
    flags = " ".join(f"{name}:{'yes' if have else 'no'}" for name, have in cpu["flags"].items())
    lines = [
        f"CPU: {cpu['cpu'] or 'unknown'}; ISA class {cpu['isa']}",
        f"flags: {flags}",
        f"threads: {cpu['default_threads']} by default ({cpu['cpus_available']} CPUs available, busy ones left alone)",
        f"recommended precision: {cpu['recommendation']}",
    ]
    if "precision_auto" in data:
        lines.append(
            f"--precision auto for {data['precision_auto']['artifact']}: {data['precision_auto']['reason']}"
        )
    for line in lines:
        console.print(line, highlight=False, markup=False, soft_wrap=True)
