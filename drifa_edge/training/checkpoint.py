"""Moved to :mod:`drifa_edge.artifact.checkpoint` (re-layering, issue 11); this path warns and goes in the next release."""

from drifa_edge._moved import forward

__getattr__ = forward("drifa_edge.training.checkpoint", "drifa_edge.artifact.checkpoint")
