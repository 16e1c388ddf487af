"""--help reads cleanly: flags show no ``<bool>`` type beside them."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from drifa_edge.cli import app

COMMANDS = ["", "train", "export", "check", "predict", "bench", "demo", "info"]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_has_no_bool_type_beside_flags(command):
    result = CliRunner().invoke(app, [*command.split(), "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    assert "<bool>" not in result.output
