"""`drifa-edge info`: installed runtimes, versions and the devices each sees."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from drifa_edge import __version__
from drifa_edge.cli.app import app
from drifa_edge.runtimes.base import probe_runtime, runtime_names


def collect_info() -> dict:
    return {"drifa-edge": __version__, "runtimes": {n: probe_runtime(n) for n in runtime_names()}}


@app.command()
def info(as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table")) -> None:
    """List installed runtimes, their versions and devices / execution providers."""
    data = collect_info()
    if as_json:
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
    Console().print(table)
