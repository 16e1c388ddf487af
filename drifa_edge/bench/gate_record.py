"""Record a gated build's verdict and speed on this CPU in its model card (``drifa-edge check
--write-card``), for ``--precision auto`` on machines of the same ISA class.

The speed is measured like a ``drifa-edge bench`` row (its own subprocess, random inputs of the
card's shapes, one case, T MC samples, warm-up then timed calls): the median per-case latency is
what :func:`drifa_edge.runtimes.choice.choose_build` compares. See that module for the record.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from drifa_edge.artifact.card import read_card, write_card
from drifa_edge.artifact.ensemble import resolve_members
from drifa_edge.bench.rows import RowSpec
from drifa_edge.bench.runner import run_worker
from drifa_edge.errors import UnsupportedBackendError
from drifa_edge.inference.predictor import choose_runtime
from drifa_edge.runtimes.choice import BuildRecord, new_record, with_record
from drifa_edge.runtimes.cpu import isa_class
from drifa_edge.runtimes.threads import default_threads


def time_build(
    path: str | Path,
    runtime: str,
    precision: str,
    samples: int = 30,
    threads: int | None = None,
    device: str | None = None,
    repeats: int = 10,
    timeout_s: float = 900.0,
) -> dict[str, Any]:
    """Per-case latency of one build (bench row of one case, T = ``samples``); the worker's
    result dict: ``sweep[0]["case_ms_p50"]`` and the rest, or ``status`` failed/skipped and ``reason``."""
    spec = RowSpec(
        row_id=f"{runtime}-{precision}",
        runtime=runtime,
        precision=precision,
        path=str(path),
        device=device,
        samples=(samples,),
        batches=(1,),
        warmup=2,
        repeats=repeats,
        budget_s=30.0,
        min_repeats=3,
        threads=threads,
    )
    with tempfile.TemporaryDirectory(prefix="drifa-gate-speed-") as tmp:
        return run_worker(spec, timeout_s, Path(tmp))


def record_gate(
    candidate: str | Path,
    runtime: str,
    precision: str,
    passed: bool,
    samples: int = 30,
    policy: str = "",
    reference: str = "",
    threads: int | None = None,
    device: str | None = None,
) -> tuple[BuildRecord, list[str]]:
    """Time the candidate build here and store its gate verdict and speed under this CPU's ISA
    class in the card of every member of ``candidate``. Returns (the record, members written).

    A failed build that could not be timed is recorded with ``p50_ms`` None (auto never picks
    it); a passed one raises UnsupportedBackendError, recording nothing."""
    runtime = choose_runtime(candidate, runtime, precision)
    threads = threads or default_threads()
    members = resolve_members(Path(candidate))
    timed = time_build(members[0], runtime, precision, samples, threads, device)
    p50 = timed["sweep"][0]["case_ms_p50"] if timed.get("status") == "ok" else None
    record = new_record(
        runtime, precision, passed, p50, samples, threads=threads, policy=policy, reference=reference
    )
    if p50 is None and passed:
        raise UnsupportedBackendError(
            f"{candidate}: the build passed the gate but could not be timed on this CPU "
            f"({timed.get('reason', '?')}); nothing recorded"
        )
    isa = isa_class()
    written = []
    for member in members:
        write_card(with_record(read_card(member, verify=False), record, isa), member)
        written.append(str(member))
    return record, written
