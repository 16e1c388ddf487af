"""--format plain: a table in a log never splits a number or a path, whatever the width."""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from rich.table import Table

from drifa_edge.cli.tables import plain_lines, print_table, resolve_format
from drifa_edge.errors import ConfigError


def _table() -> Table:
    table = Table(title="drifa-edge bench: T=30, batch 1")
    for h in ("runtime", "p50 ms", "accuracy", "gate"):
        table.add_column(h, justify="right" if h != "runtime" else "left", overflow="fold")
    table.add_row("onnxruntime", "12345.678", "0.912\n0.877", "[green]pass[/]")
    table.add_row("openvino-int8-a-long-name", "3.1", "0.905\n0.870", "[bold red]FAIL[/] (n=3)")
    table.caption = "[1] footnote with [bold]markup[/]"
    return table


def test_plain_lines_keep_every_cell_whole_and_aligned():
    lines = plain_lines(_table())
    assert lines[0] == "drifa-edge bench: T=30, batch 1"
    header, first, second = lines[1:4]
    assert header.split() == ["runtime", "p50", "ms", "accuracy", "gate"]
    assert "12345.678" in first and "0.912 / 0.877" in first and first.endswith("pass")
    assert second.endswith("FAIL (n=3)")  # markup removed, text kept
    # right-aligned numbers end in the same column
    assert first.index("12345.678") + len("12345.678") == second.index("3.1") + len("3.1")
    assert lines[-1] == "[1] footnote with markup"


def test_printed_plain_at_80_columns_never_wraps():
    buffer = io.StringIO()
    console = Console(file=buffer, width=40, force_terminal=False)
    print_table(_table(), "plain", console)
    text = buffer.getvalue()
    assert "12345.678" in text and "openvino-int8-a-long-name" in text
    assert len(text.splitlines()) == len(plain_lines(_table()))
    assert "─" not in text and "│" not in text


def test_auto_is_plain_off_a_terminal_and_table_on_one():
    assert resolve_format("auto", Console(file=io.StringIO(), force_terminal=False)) == "plain"
    assert resolve_format("auto", Console(file=io.StringIO(), force_terminal=True)) == "table"
    assert resolve_format("json", Console(file=io.StringIO())) == "json"
    with pytest.raises(ConfigError, match="Did you mean 'plain'") as e:
        resolve_format("plian", Console(file=io.StringIO()))
    assert e.value.exit_code == 2
