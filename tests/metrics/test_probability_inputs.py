"""Probability metrics refuse what is not probabilities (issue 14: ECE 2.33 and NLL -0.0 on logits)."""

from __future__ import annotations

import numpy as np
import pytest

from drifa_edge import metrics as M
from drifa_edge.errors import BadInputError, ProbabilityError
from drifa_edge.metrics.uncertainty import summarize

LABELS = np.array([0, 1, 1, 0])
LOGITS = np.array([[2.0, -1.0], [0.5, 3.0], [-2.0, 1.0], [4.0, 0.1]])
PROBS = np.exp(LOGITS) / np.exp(LOGITS).sum(1, keepdims=True)


@pytest.mark.parametrize("metric", [M.ece, M.mce, M.adaptive_ece, M.nll, M.brier, M.reliability_bins])
def test_logits_are_refused_with_what_was_received(metric) -> None:
    with pytest.raises(ProbabilityError, match=r"got values in \[-2, 4\]; logits\?"):
        metric(LOGITS, LABELS)


@pytest.mark.parametrize(
    ("probs", "match"),
    [
        (
            np.array([[0.5, 0.4], [0.5, 0.5], [0.5, 0.5], [0.5, 0.5]]),
            r"rows must sum to 1 \(within 0.001\).*row 0: 0.9",
        ),
        (PROBS * 100, r"in \[0, 1\], got values in \[.*, .*\]"),
        (np.where(PROBS > 0.9, np.nan, PROBS), r"NaN or Inf \(4 row\(s\)\)"),
    ],
)
def test_other_non_probabilities(probs: np.ndarray, match: str) -> None:
    with pytest.raises(ProbabilityError, match=match):
        M.nll(probs, LABELS)
    assert issubclass(ProbabilityError, BadInputError)  # the CLI maps it to exit 3


def test_valid_probabilities_still_give_the_hand_computed_value() -> None:
    # NLL by hand: -mean log p(true class); within tolerance float16 round-off passes
    expected = -np.mean(np.log(PROBS[np.arange(4), LABELS]))
    assert M.nll(PROBS.astype(np.float16), LABELS) == pytest.approx(expected, abs=2e-3)
    assert M.nll(PROBS, LABELS) == pytest.approx(expected, rel=1e-12)


def test_kl_and_mc_summaries_check_too() -> None:
    with pytest.raises(ProbabilityError, match="KL p"):
        M.kl_divergence(LOGITS, PROBS)
    with pytest.raises(ProbabilityError, match="logits"):
        summarize(LOGITS[None])
