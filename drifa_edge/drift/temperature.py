"""Moved to :mod:`drifa_edge.metrics.temperature` (re-layering, issue 11); this path warns and goes in the next release."""

from drifa_edge._moved import forward

__getattr__ = forward(
    "drifa_edge.drift.temperature", "drifa_edge.metrics.temperature", "drifa_edge.artifact.card"
)
