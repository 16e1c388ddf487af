"""The one place scale-out code touches the local prediction code.

Ray workers need local ``predict`` cut in two, which ``drifa_edge.inference.predictor``
provides: ``prepare_case`` (read + preprocess one case; picklable result, errors
captured; runs in a Ray Data task or a Serve request thread) and a ``Predictor`` opened
once per actor or replica whose ``predict_prepared`` turns prepared cases into exactly
the JSON records ``drifa-edge predict`` writes. Scale-out code imports these (and the
card and member helpers) from here, so a move of the inference code touches one file.
"""

from __future__ import annotations

from pathlib import Path

from drifa_edge.artifact.card import ModelCard, read_card
from drifa_edge.artifact.ensemble import resolve_members
from drifa_edge.errors import PARTIAL_FAILURE_EXIT
from drifa_edge.inference.predictor import Predictor, PreparedCase, choose_runtime, prepare_case


def model_card(artifact: str | Path) -> ModelCard:
    """The (first member's) model card of an artifact, without opening a runtime."""
    return read_card(resolve_members(artifact)[0], verify=False)


def member_cards(artifact: str | Path) -> list[ModelCard]:
    """Every member's model card (one for a single model), without opening a runtime."""
    return [read_card(m, verify=False) for m in resolve_members(artifact)]


__all__ = [
    "PARTIAL_FAILURE_EXIT",
    "Predictor",
    "PreparedCase",
    "choose_runtime",
    "member_cards",
    "model_card",
    "prepare_case",
]
