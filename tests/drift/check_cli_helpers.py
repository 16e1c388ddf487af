"""Shared by the `drifa-edge check` CLI tests: run the CLI in-process and return its exit code."""

from __future__ import annotations

import sys

import pytest


def run_check_cli(monkeypatch, *args) -> int:
    """``drifa-edge check ARGS...`` through the real entry point (exit codes included)."""
    from drifa_edge.cli import main

    monkeypatch.setattr(sys, "argv", ["drifa-edge", "check", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return exit_info.value.code
