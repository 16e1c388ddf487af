"""Runtimes behind one protocol; see :mod:`drifa_edge.runtimes.base`."""

from drifa_edge.runtimes.base import REGISTRY, Runtime, RuntimeOptions, open_runtime, runtime_names

__all__ = ["REGISTRY", "Runtime", "RuntimeOptions", "open_runtime", "runtime_names"]
