"""How a command prints its result table: ``--format auto|table|plain|json``.

``table`` is Rich's boxed table, sized to the terminal. ``plain`` is one line per row with
columns separated by two spaces and padded to their widest cell: nothing is ever wrapped or
folded, so a number is never split over lines in a log, whatever its width (``auto`` picks it
whenever stdout is not a terminal). ``json`` is for scripts; each command supplies its data.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from drifa_edge.cli.text import require_choice

FORMATS = ("auto", "table", "plain", "json")
FORMAT_HELP = "auto (table on a terminal, plain otherwise) | table | plain (never wraps: for logs) | json"


def resolve_format(fmt: str, console: Console) -> str:
    """``auto`` -> ``table`` on a terminal, ``plain`` otherwise; other values checked (exit 2)."""
    require_choice("--format", fmt, FORMATS)
    if fmt == "auto":
        return "table" if console.is_terminal else "plain"
    return fmt


def _text(cell: object) -> str:
    if isinstance(cell, Text):
        return cell.plain
    return Text.from_markup(str(cell)).plain if isinstance(cell, str) else str(cell)


def plain_lines(table: Table) -> list[str]:
    """The table as unwrapped text lines: title, header, rows, caption (markup removed)."""
    columns = table.columns
    grid = [[_text(c.header) for c in columns]]
    for k in range(table.row_count):
        # a cell may hold several lines (a per-task list): keep them on one line, joined by " / "
        grid.append([" / ".join(_text(list(c.cells)[k]).splitlines()) for c in columns])
    widths = [max(len(row[i]) for row in grid) for i in range(len(columns))]
    right = [c.justify == "right" for c in columns]
    lines = [_text(table.title)] if table.title else []
    for row in grid:
        cells = [v.rjust(w) if r else v.ljust(w) for v, w, r in zip(row, widths, right, strict=True)]
        lines.append("  ".join(cells).rstrip())
    if table.caption:
        lines += _text(table.caption).splitlines()
    return lines


def print_table(table: Table, fmt: str, console: Console) -> None:
    """Print ``table`` as ``table`` or ``plain`` (``fmt`` already resolved; json is the caller's)."""
    if fmt == "plain":
        for line in plain_lines(table):
            console.print(line, markup=False, highlight=False, soft_wrap=True)
    else:
        console.print(table)
