"""The one protocol every runtime implements, and the registry that picks one.

A runtime loads an artifact and runs the two halves of DRIFA-Net on numpy
batches: the deterministic prefix (images -> per-modality features) and the
stochastic suffix (features -> logits per task, a fresh MC dropout mask per row).
It never reads image files and never applies softmax: the engine does both, the
same way for every runtime. Heavy imports live inside each runtime's module.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from drifa_edge.artifact.card import ModelCard
from drifa_edge.errors import UnknownChoiceError, UnsupportedBackendError, suggest
from drifa_edge.runtimes.threads import default_threads

PRECISIONS = ("fp32", "fp16", "bf16", "int8")


@runtime_checkable
class Runtime(Protocol):
    name: str
    precision: str
    device: str
    card: ModelCard
    seedable: bool  # True when reseed() makes the MC masks repeatable

    def run_prefix(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """M arrays (B, C, H, W) float32 -> M feature arrays (B, ...)."""

    def run_suffix(
        self, features: Sequence[np.ndarray], uniforms: Sequence[np.ndarray] | None = None
    ) -> list[np.ndarray]:
        """M feature arrays (N, ...) -> logits per task (N, K_t). With ``uniforms``
        (one array per dropout, see ``dropout_shapes``) the masks are the given ones."""

    def reseed(self, seed: int | None) -> None:
        """Restart the MC mask stream from ``seed`` (no-op where not seedable)."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class RuntimeOptions:
    """What a user may choose when opening an artifact in a runtime."""

    precision: str = "fp32"
    device: str | None = None  # runtime-specific name: "cpu", "cuda:0", "GPU", "NPU"...
    threads: int | None = None
    hint: str = "latency"  # OpenVINO performance hint: latency | throughput
    # parallel infer requests one suffix call's rows are split over (OpenVINO CPU streams);
    # None = the runtime's choice, 1 = one request with every thread
    streams: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise UnknownChoiceError(
                f"unknown precision {self.precision!r}; choose one of {PRECISIONS}"
                + suggest(self.precision, PRECISIONS)
            )
        if self.streams is not None and (isinstance(self.streams, bool) or int(self.streams) < 1):
            raise UnsupportedBackendError(
                f"streams must be >= 1 (or unset for the default), got {self.streams!r}"
            )
        if self.threads is not None and (isinstance(self.threads, bool) or int(self.threads) < 1):
            raise UnsupportedBackendError(
                f"threads must be >= 1 (or unset for the default), got {self.threads!r}"
            )
        if self.hint not in ("latency", "throughput"):
            raise UnknownChoiceError(f"hint must be 'latency' or 'throughput', got {self.hint!r}")


# name -> "module:function"; the function is ``open(path, options) -> Runtime``.
REGISTRY: dict[str, str] = {
    "torch": "drifa_edge.runtimes.torch:open_runtime",
    "onnxruntime": "drifa_edge.runtimes.onnxruntime:open_runtime",
    "openvino": "drifa_edge.runtimes.openvino:open_runtime",
    "tensorrt": "drifa_edge.runtimes.tensorrt:open_runtime",
}


def runtime_names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def open_runtime(name: str, path: str | Path, options: RuntimeOptions | None = None) -> Runtime:
    """Open one artifact folder (a checkpoint or an export member) in runtime ``name``.

    ``options.threads`` None becomes :func:`drifa_edge.runtimes.threads.default_threads` (the
    command's ``--threads``, else the CPUs other processes leave free)."""
    if name not in REGISTRY:
        raise UnknownChoiceError(
            f"unknown runtime {name!r}; choose one of {list(REGISTRY)}" + suggest(name, REGISTRY)
        )
    options = options or RuntimeOptions()
    if options.threads is None:  # "adapt_threads": a runtime that can may re-read the load per call
        extra = {**options.extra, "adapt_threads": True}
        options = dataclasses.replace(options, threads=default_threads(), extra=extra)
    module_name, func = REGISTRY[name].split(":")
    module = importlib.import_module(module_name)
    return getattr(module, func)(Path(path), options)


def probe_runtime(name: str) -> dict[str, Any]:
    """Availability, version and devices of a runtime, without loading a model."""
    module_name, _ = REGISTRY[name].split(":")
    try:
        module = importlib.import_module(module_name)
        return module.probe()
    except Exception as e:  # a broken install must not break `drifa-edge info`
        return {"available": False, "reason": str(e)}
