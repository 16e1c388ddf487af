"""Moved to :mod:`drifa_edge.artifact.card` (re-layering, issue 11); this path warns and goes in the next release."""

from drifa_edge._moved import forward

__getattr__ = forward("drifa_edge.card", "drifa_edge.artifact.card")
