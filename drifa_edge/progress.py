"""Progress of long steps as log records: library code says which stage it is in, the command
line shows it.

Library functions call :func:`stage` (``"ONNX export: member-0, prefix graph"``) at each step that
can take more than a few seconds; nothing is printed unless someone listens on the
``drifa_edge.progress`` logger. ``drifa_edge.cli.progress.Progress`` does: it prints each stage
as a plain line on stderr and, when stderr is not a terminal (a pipe, a CI log), repeats the
current stage with its elapsed time at least every ~10 s, so no step is silent in a log.
"""

from __future__ import annotations

import logging

LOGGER_NAME = "drifa_edge.progress"
_log = logging.getLogger(LOGGER_NAME)


def stage(message: str) -> None:
    """Announce the step now starting (one short line, no trailing period)."""
    _log.info(message)


def status(message: str) -> None:
    """Update the running stage's text without a line of its own (a counter such as
    ``"epoch 3/60: batch 12 of 40"``): a listener shows it in its next repeated line, which
    off a terminal comes only when nothing else was printed for ~10 s."""
    _log.debug(message)


def listening() -> bool:
    """Whether a command line shows the stages (a :class:`drifa_edge.cli.progress.Progress`
    is active): library code that prints its own lines then hands them to :func:`stage`."""
    return bool(_log.handlers)


def step(what: str, index: int, total: int, name: str) -> None:
    """Announce item ``index`` (1-based) of ``total``: ``step("row", 2, 7, "onnxruntime-int8")``
    logs ``"row 2 of 7: onnxruntime-int8"``."""
    _log.info("%s %d of %d: %s", what, index, total, name)
