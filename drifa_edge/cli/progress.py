"""Progress lines for long commands, readable on a terminal and in a log.

:class:`Progress` listens to :mod:`drifa_edge.progress` (the stages library code announces) and
prints each as ``[  12 s] stage`` on stderr. Off a terminal (a pipe, ``> log``, CI) a background
thread repeats the current stage with its elapsed time whenever nothing was printed for
``interval`` seconds (default 10, or ``$DRIFA_PROGRESS_INTERVAL``), because Rich's transient
bars and spinners print nothing there. On a terminal a spinner shows the current stage instead
(``spinner=False`` for a command that draws its own bar, such as ``train``).
:func:`drifa_edge.progress.status` records change the current stage without a line.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from types import TracebackType

from rich.console import Console

from drifa_edge.progress import LOGGER_NAME

DEFAULT_INTERVAL_S = 10.0


def progress_interval() -> float:
    """Seconds between repeated lines off a terminal: ``$DRIFA_PROGRESS_INTERVAL`` or 10."""
    try:
        value = float(os.environ.get("DRIFA_PROGRESS_INTERVAL", DEFAULT_INTERVAL_S))
    except ValueError:
        return DEFAULT_INTERVAL_S
    return value if value > 0 else DEFAULT_INTERVAL_S


class Progress(logging.Handler):
    """``with Progress("exporting"):`` prints stage lines (and heartbeats off a terminal) on stderr."""

    def __init__(
        self, what: str, console: Console | None = None, interval: float | None = None, spinner: bool = True
    ) -> None:
        super().__init__(level=logging.DEBUG)
        self.console = console or Console(stderr=True)
        self.interval = interval or progress_interval()
        self.current = what
        self._start = self._last = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._status = None
        self._spinner = spinner
        self._logger = logging.getLogger(LOGGER_NAME)
        self._saved = (self._logger.level, self._logger.propagate)

    # -- lines
    def _elapsed(self) -> str:
        return f"[{time.monotonic() - self._start:5.0f} s]"

    def line(self, text: str) -> None:
        with self._lock:
            self.current = text
            self._last = time.monotonic()
            # markup=False: stage text holds paths and names, never Rich markup
            self.console.print(f"{self._elapsed()} {text}", markup=False, highlight=False, soft_wrap=True)
            if self._status is not None:
                self._status.update(text)

    def update(self, text: str) -> None:
        """Change the current stage without a line now (counters): the next heartbeat shows it."""
        with self._lock:
            self.current = text
            if self._status is not None:
                self._status.update(text)

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno < logging.INFO:  # drifa_edge.progress.status: no line of its own
            self.update(record.getMessage())
        else:
            self.line(record.getMessage())

    def _beat(self) -> None:
        while not self._stop.wait(min(1.0, self.interval)):
            with self._lock:
                quiet = time.monotonic() - self._last >= self.interval
            if quiet:
                self.line(f"still: {self.current.removeprefix('still: ')}")

    # -- context
    def __enter__(self) -> Progress:
        self._logger.addHandler(self)
        self._logger.setLevel(logging.DEBUG)
        self._logger.propagate = False
        if self.console.is_terminal:
            if self._spinner:  # else the command draws its own bar: stage lines only
                self._status = self.console.status(self.current)
                self._status.start()
        else:
            self._thread = threading.Thread(target=self._beat, name="drifa-progress", daemon=True)
            self._thread.start()
        self.line(self.current)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._status is not None:
            self._status.stop()
        self._logger.removeHandler(self)
        self._logger.setLevel(self._saved[0])
        self._logger.propagate = self._saved[1]
