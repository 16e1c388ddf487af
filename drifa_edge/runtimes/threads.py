"""Thread and wait policy of every runtime, so that a co-running CPU load slows inference
gracefully instead of collapsing it.

A box beside a scanner shares its CPU with other software. Two things made latency collapse
under one busy process (issue 19: the torch engine 11x slower, a newcomer's training 14-18x):

- **spinning**: OpenMP (PyTorch) and ONNX Runtime's thread pool keep idle workers spinning for
  a while after each parallel region, so the workers steal the cores they wait for. Here
  waiting is passive everywhere: ``OMP_WAIT_POLICY=PASSIVE`` (read by libgomp when torch is
  imported, so set before that: :func:`apply_wait_policy`, called by the CLI first thing),
  ONNX Runtime's ``session.intra_op.allow_spinning = 0`` / ``inter_op`` likewise, OpenVINO's
  ``ENABLE_CPU_PINNING = NO`` (a pinned stream cannot move off a core another process holds);
- **too many threads**: a thread per core on a machine whose cores are busy. With no
  ``--threads``, :func:`default_threads` takes the CPUs this process may run on
  (``os.sched_getaffinity``) minus the cores other processes kept busy over a short sample of
  /proc/stat (a core counts as busy above 70 %), at least 1. ``--threads N`` on a command (the
  ``DRIFA_EDGE_THREADS`` environment variable, inherited by subprocesses such as bench rows)
  overrides it.

The load is sampled when a runtime opens. ONNX Runtime and OpenVINO fix their threads then,
so a load that starts later is met by passive waiting alone; the torch runtime, whose thread
count can change between calls, re-reads it before every call (:class:`CallThreads`: the cores
others kept busy since its previous call) unless ``--threads`` fixed it. Measured in
``benchmarks/busy_cpu.py`` (README, "CPU: precision per ISA, threads under load...").
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import time
from collections.abc import MutableMapping
from pathlib import Path

from drifa_edge.errors import ConfigError

log = logging.getLogger(__name__)

THREADS_ENV = "DRIFA_EDGE_THREADS"
# OpenMP implementations' passive waiting: libgomp (PyTorch's CPU wheels) and Intel's libiomp
WAIT_ENV = {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"}
SET_BY_US_ENV = "DRIFA_EDGE_SET_ENV"  # which of WAIT_ENV drifa-edge set (not the user)
BUSY_CORE = 0.7  # a core used more than this fraction of the sample by others counts as busy
_SAMPLE_S = 0.1
PROC_STAT = Path("/proc/stat")


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask; os.cpu_count() where there is none)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _cpu_times(stat: Path) -> tuple[float, float] | None:
    """(busy, total) jiffies summed over all CPUs from the ``cpu`` line of /proc/stat."""
    try:
        fields = stat.read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu" or len(fields) < 5:
        return None
    values = [float(v) for v in fields[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0.0)  # idle + iowait
    total = sum(values[:8])  # guest time is already in user
    return total - idle, total


def busy_cores(sample_s: float = _SAMPLE_S, stat: Path = PROC_STAT) -> float:
    """Cores kept busy over ``sample_s`` seconds (0.0 .. number of CPUs), from /proc/stat; 0.0
    where it cannot be read (not Linux). This process sleeps meanwhile, so the busy time is others'."""
    first = _cpu_times(stat)
    if first is None:
        return 0.0
    time.sleep(sample_s)
    second = _cpu_times(stat)
    if second is None or second[1] <= first[1]:
        return 0.0
    fraction = (second[0] - first[0]) / (second[1] - first[1])
    return max(0.0, fraction) * (os.cpu_count() or 1)


def threads_from_load(cpus: int, busy: float) -> int:
    """``cpus`` minus the cores counted busy (each above :data:`BUSY_CORE`), at least 1."""
    return max(1, cpus - int(busy + (1.0 - BUSY_CORE)))


def requested_threads(env: MutableMapping[str, str] | None = None) -> int | None:
    """The ``--threads`` a command was given (``DRIFA_EDGE_THREADS``), or None."""
    env = os.environ if env is None else env
    value = env.get(THREADS_ENV)
    if not value:
        return None
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise ConfigError(f"{THREADS_ENV} must be a whole number >= 1, got {value!r}; unset it or fix it")
    return n


@functools.lru_cache(maxsize=1)
def _default_from_load() -> int:
    cpus = available_cpus()
    n = threads_from_load(cpus, busy_cores()) if cpus > 1 else 1
    if n < cpus:
        log.info("%d of %d CPUs busy with other work: using %d thread(s)", cpus - n, cpus, n)
    return n


def default_threads() -> int:
    """Threads for a runtime given no ``threads``: ``DRIFA_EDGE_THREADS`` if set, else from the
    load (see the module docstring; sampled once per process)."""
    return requested_threads() or _default_from_load()


def resolve_threads(threads: int | None) -> int:
    """``threads`` itself, or :func:`default_threads` for None."""
    if threads is None:
        return default_threads()
    if isinstance(threads, bool) or int(threads) < 1:
        raise ConfigError(f"threads must be >= 1 (or unset for the default), got {threads!r}")
    return int(threads)


def use_threads(threads: int | None, env: MutableMapping[str, str] | None = None) -> None:
    """Make ``threads`` this process's (and its subprocesses') default; None leaves it as is."""
    if threads is None:
        return
    env = os.environ if env is None else env
    env[THREADS_ENV] = str(resolve_threads(threads))


def apply_wait_policy(env: MutableMapping[str, str] | None = None) -> bool:
    """Ask OpenMP for passive waiting (values the user set are kept). Returns False when torch
    was already imported, i.e. its OpenMP read the environment before this (then set
    ``OMP_WAIT_POLICY=PASSIVE`` yourself before importing torch)."""
    env = os.environ if env is None else env
    ours = set(filter(None, env.get(SET_BY_US_ENV, "").split(",")))
    for key, value in WAIT_ENV.items():
        if key not in env:
            env[key] = value
            ours.add(key)
    if ours:
        env[SET_BY_US_ENV] = ",".join(sorted(ours))
    return "torch" not in sys.modules


def baseline_env(env: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """A copy of ``env`` without what :func:`apply_wait_policy` added: for a subprocess that must
    run as its authors ran it (bench's authors' way), with OpenMP's own defaults."""
    env = dict(os.environ if env is None else env)
    for key in env.pop(SET_BY_US_ENV, "").split(","):
        env.pop(key, None)
    return env


def set_torch_threads(threads: int | None) -> int:
    """torch's intra-op threads: ``threads`` or the default; returns the number set."""
    import torch

    n = resolve_threads(threads)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


class CallThreads:
    """Threads for each call of a runtime that can change them between calls (torch): the CPUs
    this process may use minus the cores *other* processes kept busy since the previous call
    (system busy time from /proc/stat minus this process's own CPU time, over the wall time).
    No sleeping sample: the interval is the time between calls. Where /proc/stat is missing,
    always ``cpus``."""

    MIN_INTERVAL_S = 0.2  # /proc/stat counts in 10 ms ticks: shorter intervals keep the last choice

    def __init__(self, cpus: int | None = None, stat: Path = PROC_STAT) -> None:
        self.cpus = cpus or available_cpus()
        self._stat = stat
        self._tick = float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100.0
        self._mark = self._now()
        self._last = self.cpus

    def _now(self) -> tuple[tuple[float, float] | None, float, float]:
        return _cpu_times(self._stat), time.process_time(), time.monotonic()

    def others_busy(self) -> float | None:
        """Cores other processes used since the last measurement (None: unknown, or too soon:
        then the interval goes on)."""
        (before, own_before, t_before), now = self._mark, self._now()
        if before is None or now[0] is None:
            return None
        if now[2] - t_before < self.MIN_INTERVAL_S:
            return None
        self._mark = now
        busy_s = (now[0][0] - before[0]) / self._tick - (now[1] - own_before)
        return max(0.0, busy_s) / (now[2] - t_before)

    def threads(self) -> int:
        """Threads for the next call (the previous choice when the interval is too short)."""
        busy = self.others_busy()
        if busy is not None:
            self._last = threads_from_load(self.cpus, busy)
        return self._last


def onnxruntime_session_entries() -> dict[str, str]:
    """ONNX Runtime session config entries for passive thread pools."""
    return {"session.intra_op.allow_spinning": "0", "session.inter_op.allow_spinning": "0"}


def openvino_properties(threads: int) -> dict[str, str]:
    """OpenVINO CPU properties: ``threads`` inference threads, no pinning to cores."""
    return {"INFERENCE_NUM_THREADS": str(threads), "ENABLE_CPU_PINNING": "NO"}
