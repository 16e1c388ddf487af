"""Progress off a terminal: each stage is a line, and the running stage repeats with its elapsed
time whenever nothing was printed for an interval (Rich's spinners print nothing in a log)."""

from __future__ import annotations

import io
import logging
import re
import time

from rich.console import Console

from drifa_edge.cli.progress import Progress, progress_interval
from drifa_edge.progress import LOGGER_NAME, listening, stage, status, step

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


def test_a_status_changes_the_repeated_line_without_a_line_of_its_own():
    """status() is a counter (``batch 12 of 40``): no line when it changes, but the next
    repeated line off a terminal shows the latest one."""
    console, buffer = _log_console()
    with Progress("training", console, interval=0.3):
        assert listening()
        for k in range(1, 4):
            status(f"epoch 1/2: batch {k} of 40")
        assert len(buffer.getvalue().splitlines()) == 1  # only the opening line so far
        time.sleep(0.8)
    assert not listening()
    lines = buffer.getvalue().splitlines()
    assert not any("batch 1 of 40" in ln or "batch 2 of 40" in ln for ln in lines)
    assert any(ln.endswith("] still: epoch 1/2: batch 3 of 40") for ln in lines), lines


def test_without_a_spinner_a_terminal_gets_the_stage_lines_only():
    """``train`` draws its own bar on a terminal: Progress(spinner=False) adds no live display."""
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=80)
    with Progress("training", console, interval=0.2, spinner=False) as shown:
        stage("epoch   1  train 1.0")
        time.sleep(0.5)  # a terminal gets no repeated lines either
        assert shown._status is None and shown._thread is None
    lines = [ln for ln in buffer.getvalue().splitlines() if ln.strip()]
    assert len(lines) == 2 and lines[1].endswith("epoch   1  train 1.0")
