"""Test-only crash points: ``DRIFA_EDGE_CRASH_AT=<name>`` makes the process ``os._exit``
at that named point, so restart tests are reproducible rather than lucky.

``DRIFA_EDGE_CRASH_AT=name`` crashes at the first pass; ``name:N`` at the N-th pass.
Nothing happens when the variable is unset (production). Exit code 137, as a kill -9.
"""

from __future__ import annotations

import os
import sys
import threading

POINTS = (
    "after_instance_fsync",  # instance file on disk, not yet in the store
    "after_store_commit",  # instance in the store, C-STORE response not yet sent
    "before_ack",  # just before the handler returns success
    "after_ack",  # the C-STORE response has been sent
    "during_inference",  # case INFERRING, result not yet written
    "after_result_commit",  # result committed (case DONE) and audited, SR/outbox not yet made
    "before_send",  # just before a C-STORE to a destination
    "after_send",  # destination acknowledged, outbox not yet marked sent
)
EXIT_CODE = 137
_lock = threading.Lock()
_counts: dict[str, int] = {}


def crash_point(name: str, after_s: float = 0.0) -> None:
    """Exit the process if ``DRIFA_EDGE_CRASH_AT`` names this point (see module doc).

    ``after_s`` > 0: return now and exit from another thread after that many seconds, for
    points just *after* something the caller is about to do (pynetdicom announces a
    response before it writes it to the socket)."""
    wanted = os.environ.get("DRIFA_EDGE_CRASH_AT")
    if not wanted:
        return
    point, _, nth = wanted.partition(":")
    if point != name:
        return
    with _lock:
        _counts[name] = _counts.get(name, 0) + 1
        hit = _counts[name] >= int(nth or 1)
    if hit and after_s:
        threading.Timer(after_s, _exit, (name,)).start()
    elif hit:
        _exit(name)


def _exit(name: str) -> None:
    sys.stderr.write(f"drifa-edge: test crash point {name!r} reached, exiting\n")
    sys.stderr.flush()
    os._exit(EXIT_CODE)
