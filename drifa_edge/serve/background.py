"""One daemon thread per service part (assembly, worker, retention) with the same life cycle."""

from __future__ import annotations

import threading


class BackgroundLoop:
    """Runs ``self._run`` in a daemon thread from :meth:`start` until :meth:`stop`.

    ``_run`` loops until ``self._stop`` is set; :meth:`stop` sets it, calls :meth:`_wake`
    (for a loop that also waits on an event of its own) and waits up to ``JOIN_TIMEOUT_S``
    seconds for the thread (a daemon: it never blocks the process from exiting).
    """

    JOIN_TIMEOUT_S = 10.0

    def __init__(self, name: str) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake()
        if self._thread.is_alive():
            self._thread.join(timeout=self.JOIN_TIMEOUT_S)

    def _wake(self) -> None:
        """Interrupt a wait other than ``self._stop``'s (none by default)."""

    def _run(self) -> None:  # pragma: no cover - every subclass defines it
        raise NotImplementedError
