"""Progress off a terminal: each stage is a line, and the running stage repeats with its elapsed
time whenever nothing was printed for an interval (Rich's spinners print nothing in a log)."""

from __future__ import annotations

import io
import logging
import re
import time

from rich.console import Console

from drifa_edge.cli.progress import Progress, progress_interval
from drifa_edge.progress import LOGGER_NAME, stage, step

LINE = re.compile(r"^\[\s*\d+ s\] \S")


def _log_console() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=False, width=80), buffer


def test_stages_print_as_lines_and_a_quiet_stage_repeats():
    console, buffer = _log_console()
    with Progress("exporting", console, interval=0.2):
        stage("ONNX export: prefix graph -> /a/very/long/path/" + "x" * 80 + "/prefix.onnx")
        time.sleep(0.75)  # quiet: at least two repeats
        step("row", 2, 7, "onnxruntime-int8")
    lines = buffer.getvalue().splitlines()
    assert lines[0].endswith("] exporting")
    assert "prefix.onnx" in lines[1]  # a long stage stays on one line (soft wrap)
    repeats = [
        ln for ln in lines if ln.endswith("still: ONNX export: prefix graph -> " + lines[1].split(" -> ")[1])
    ]
    assert len(repeats) >= 2, lines
    assert lines[-1].endswith("] row 2 of 7: onnxruntime-int8")
    assert all(LINE.match(ln) for ln in lines), lines
    assert "\x1b[" not in buffer.getvalue()


def test_nothing_repeats_while_lines_keep_coming():
    console, buffer = _log_console()
    with Progress("bench", console, interval=0.5):
        for k in range(4):
            step("row", k + 1, 4, f"r{k}")
            time.sleep(0.1)
    assert "still:" not in buffer.getvalue()


def test_the_logger_is_restored_and_silent_without_a_listener(caplog):
    logger = logging.getLogger(LOGGER_NAME)
    before = (logger.level, logger.propagate, list(logger.handlers))
    console, buffer = _log_console()
    with Progress("x", console, interval=5):
        pass
    assert (logger.level, logger.propagate, list(logger.handlers)) == before
    stage("nobody listens")  # library use without the CLI: no output, no error
    assert "nobody listens" not in buffer.getvalue()


def test_interval_from_the_environment(monkeypatch):
    monkeypatch.setenv("DRIFA_PROGRESS_INTERVAL", "2.5")
    assert progress_interval() == 2.5
    for bad in ("abc", "0", "-3"):
        monkeypatch.setenv("DRIFA_PROGRESS_INTERVAL", bad)
        assert progress_interval() == 10.0
