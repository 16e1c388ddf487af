"""Which build a CPU runs: the per-ISA record of gated builds in the model card, and
``--precision auto``.

Whether an INT8 or BF16 build may replace FP32 is decided where the drift gate runs: it needs
labelled data and the FP32 reference. ``drifa-edge check REF CAND --write-card`` records, in the
candidate's card, the gate's verdict and the build's speed on the CPU it ran on, keyed by that
CPU's ISA class (:func:`drifa_edge.runtimes.cpu.isa_class`)::

    card.metrics["builds_by_isa"] = {
        "avx512_bf16": {"openvino/int8": {"gate": "pass", "p50_ms": 116.0, "samples": 30, ...},
                        "openvino/bf16": {"gate": "pass", "p50_ms": 170.0, ...}}}

A scanner PC (numpy + one runtime, no torch, no data) then only reads the card:
:func:`choose_build` takes the fastest build that passed on this ISA class, that the folder
holds and that an installed runtime can run. With no such record it runs FP32, the gate's
reference, and says how to record one. A record from another ISA class is never reused: the
speed order of int8 / bf16 / fp32 changes with AMX, VNNI and AVX-512 BF16.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drifa_edge.artifact.card import ModelCard, read_card
from drifa_edge.artifact.ensemble import resolve_members
from drifa_edge.errors import ConfigError, UnsupportedBackendError
from drifa_edge.runtimes.base import probe_runtime
from drifa_edge.runtimes.cpu import ISA_CLASSES, cpu_name, isa_class

RECORD_KEY = "builds_by_isa"
AUTO = "auto"
GATE_VERDICTS = ("pass", "fail")


@dataclass(frozen=True)
class BuildRecord:
    """One build's gate verdict and speed on one ISA class (a card entry)."""

    runtime: str
    precision: str
    gate: str  # "pass" | "fail"
    p50_ms: float | None  # one case, ``samples`` MC draws, on the recording machine
    samples: int
    threads: int | None = None
    policy: str = ""
    reference: str = ""  # what the gate compared against, e.g. "torch/fp32"
    cpu: str = ""
    recorded: str = ""

    def __post_init__(self) -> None:
        if self.gate not in GATE_VERDICTS:
            raise ConfigError(f"gate verdict must be one of {GATE_VERDICTS}, got {self.gate!r}")
        if self.p50_ms is not None and not self.p50_ms > 0:
            raise ConfigError(f"p50_ms must be > 0 (or None when not timed), got {self.p50_ms!r}")

    @property
    def key(self) -> str:
        return build_key(self.runtime, self.precision)

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d.pop("runtime"), d.pop("precision")
        return d


def build_key(runtime: str, precision: str) -> str:
    return f"{runtime}/{precision}"


def records(card: ModelCard, isa: str) -> list[BuildRecord]:
    """The builds recorded for ISA class ``isa`` in ``card`` (an unreadable entry is an error)."""
    section = card.metrics.get(RECORD_KEY, {}).get(isa, {})
    out = []
    for key, entry in section.items():
        runtime, _, precision = key.partition("/")
        try:
            out.append(BuildRecord(runtime=runtime, precision=precision, **entry))
        except TypeError as e:
            raise ConfigError(f"model card {RECORD_KEY}[{isa!r}][{key!r}] is not a build record ({e})") from e
    return out


def with_record(card: ModelCard, record: BuildRecord, isa: str) -> ModelCard:
    """A copy of ``card`` with ``record`` stored for ``isa`` (replacing that build's old entry)."""
    if isa not in ISA_CLASSES:
        raise ConfigError(f"unknown ISA class {isa!r}; one of {ISA_CLASSES}")
    metrics = dict(card.metrics)
    by_isa = {k: dict(v) for k, v in metrics.get(RECORD_KEY, {}).items()}
    by_isa.setdefault(isa, {})[record.key] = record.to_dict()
    metrics[RECORD_KEY] = by_isa
    return card.replace(metrics=metrics)


def new_record(
    runtime: str, precision: str, passed: bool, p50_ms: float | None, samples: int, **fields: Any
) -> BuildRecord:
    """A record stamped with this CPU's name and the time (UTC)."""
    return BuildRecord(
        runtime=runtime,
        precision=precision,
        gate="pass" if passed else "fail",
        p50_ms=None if p50_ms is None else round(float(p50_ms), 2),
        samples=int(samples),
        cpu=cpu_name(),
        recorded=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **fields,
    )


@dataclass(frozen=True)
class BuildChoice:
    """What ``--precision auto`` runs, and why (printed for the user, kept in logs)."""

    runtime: str
    precision: str
    reason: str
    isa: str


def choose_build(
    card: ModelCard,
    available: list[tuple[str, str]],
    runtime: str = AUTO,
    isa: str | None = None,
    installed: Callable[[str], bool] | None = None,
) -> BuildChoice:
    """The fastest build that passed the gate on ``isa`` (this CPU's class by default).

    ``available``: (runtime, precision) builds the artifact holds; ``runtime``: "auto" or a
    runtime name to choose within; ``installed(name)``: whether that runtime can run here.
    Falls back to FP32 (of ``runtime``, or the first of ``available`` that is installed) with
    the reason; raises UnsupportedBackendError when not even that is possible."""
    isa = isa or isa_class()
    installed = installed or (lambda name: bool(probe_runtime(name).get("available")))
    usable = [
        b for b in available if (runtime == AUTO or b[0] == runtime) and installed(b[0])
    ]  # fmt: skip
    passed = [
        r
        for r in records(card, isa)
        if r.gate == "pass" and r.p50_ms is not None and (r.runtime, r.precision) in usable
    ]
    if passed:
        best = min(passed, key=lambda r: r.p50_ms)
        others = ", ".join(f"{r.key} {r.p50_ms:g} ms" for r in sorted(passed, key=lambda r: r.p50_ms)[1:])
        return BuildChoice(
            best.runtime,
            best.precision,
            f"{best.key}: fastest build that passed the drift gate on a {isa} CPU "
            f"({best.p50_ms:g} ms per case at T={best.samples}, recorded {best.recorded} on {best.cpu or '?'}"
            + (f"; also passed: {others}" if others else "")
            + ")",
            isa,
        )
    fallback = next((b for b in usable if b[1] == "fp32"), None)
    if fallback is None:
        raise UnsupportedBackendError(
            f"--precision auto: no fp32 build{'' if runtime == AUTO else ' for ' + runtime} here that an "
            f"installed runtime can run (builds: {[build_key(*b) for b in available]}); name --precision "
            "and --runtime, or install the runtime (pip install 'drifa-edge[openvino]' or '[onnx]')"
        )
    recorded = sorted({r.key + ":" + r.gate for r in records(card, isa)})
    return BuildChoice(
        fallback[0],
        "fp32",
        f"{build_key(*fallback)}: the card records no build that passed the drift gate on a {isa} CPU"
        + (f" (recorded: {', '.join(recorded)})" if recorded else "")
        + "; running FP32, the gate's reference. To record one, on this kind of CPU run "
        "'drifa-edge check REFERENCE EXPORT --precision int8 --write-card' with labelled data",
        isa,
    )


def choose_for_artifact(artifact: str | Path, runtime: str = AUTO, isa: str | None = None) -> BuildChoice:
    """:func:`choose_build` for an artifact folder (its first member's card and builds)."""
    from drifa_edge.artifact.builds import list_builds

    member = resolve_members(Path(artifact))[0]
    builds = [(b.runtime, b.precision) for b in list_builds(member)]
    return choose_build(read_card(member, verify=False), builds, runtime, isa)
