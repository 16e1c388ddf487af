"""Is a trained model better than chance? One test per task on the validation split.

A model at chance is a failure, not a result (issue 12): after training, each
task's validation predictions are tested against two baselines:

- accuracy against the majority-class rate p0 of the validation labels (what
  always answering the most common class scores): exact one-sided binomial test,
  H0: P(correct) <= p0 (``scipy.stats.binomtest(k, n, p0, alternative="greater")``);
  exact, so it holds for small validation sets;
- balanced accuracy against its label-permutation null: the labels are shuffled
  ``permutations`` times (seeded) with the predictions fixed, and
  p = (1 + #{null >= observed}) / (1 + permutations) (Phipson & Smyth 2010). A
  constant prediction scores exactly 1/C under every permutation, so p = 1.

A task is flagged ``at_chance`` when neither test rejects at ``alpha / 2``
(Bonferroni over the two tests, family-wise level ``alpha``): nothing in its
validation predictions shows it learned. Pure numpy/scipy, no torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from drifa_edge.errors import BadInputError

ALPHA = 0.05
PERMUTATIONS = 2000


@dataclass(frozen=True)
class ChanceTest:
    cases: int
    accuracy: float
    majority_rate: float  # share of the most common class in the labels
    p_accuracy: float  # exact binomial test, accuracy > majority_rate
    balanced_accuracy: float
    chance_balanced_accuracy: float  # mean of the permutation null (1/C for a balanced predictor)
    p_balanced_accuracy: float  # label-permutation test, balanced accuracy > its null
    alpha: float
    at_chance: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _balanced_accuracy(y: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Balanced accuracy of each row of ``y`` (P, N) against ``pred`` (N,): mean recall over
    the classes present (every row is a permutation of the same labels, so all are present)."""
    present = np.flatnonzero(np.bincount(y[0], minlength=num_classes))
    hits = y == pred[None, :]
    recalls = [(hits & (y == c)).sum(axis=1) / (y[0] == c).sum() for c in present]
    return np.mean(recalls, axis=0)


def chance_test(
    labels: np.ndarray,
    predicted: np.ndarray,
    num_classes: int,
    *,
    alpha: float = ALPHA,
    permutations: int = PERMUTATIONS,
    seed: int = 0,
) -> ChanceTest:
    """Test one task's predictions (N,) against its labels (N,), both in [0, num_classes).

    Raises :class:`BadInputError` for empty or mismatched input. With N = 1 nothing
    can be shown and the task is flagged."""
    from scipy.stats import binomtest

    y = np.asarray(labels, dtype=np.int64)
    pred = np.asarray(predicted, dtype=np.int64)
    if y.ndim != 1 or y.size == 0 or y.shape != pred.shape:
        raise BadInputError(
            f"chance test needs two equal, non-empty 1-D arrays, got {y.shape} and {pred.shape}"
        )
    if y.min() < 0 or y.max() >= num_classes or pred.min() < 0 or pred.max() >= num_classes:
        raise BadInputError(f"labels and predictions must lie in [0, {num_classes})")
    n = int(y.size)
    correct = int((y == pred).sum())
    majority = float(np.bincount(y, minlength=num_classes).max() / n)
    p_acc = float(binomtest(correct, n, majority, alternative="greater").pvalue) if majority < 1 else 1.0
    rng = np.random.default_rng(seed)
    observed = float(_balanced_accuracy(y[None, :], pred, num_classes)[0])
    null = _balanced_accuracy(np.stack([rng.permutation(y) for _ in range(permutations)]), pred, num_classes)
    p_bal = float((1 + np.sum(null >= observed - 1e-12)) / (1 + permutations))
    at_chance = not (p_acc < alpha / 2 or p_bal < alpha / 2)
    return ChanceTest(
        cases=n,
        accuracy=correct / n,
        majority_rate=majority,
        p_accuracy=p_acc,
        balanced_accuracy=observed,
        chance_balanced_accuracy=float(null.mean()),
        p_balanced_accuracy=p_bal,
        alpha=alpha,
        at_chance=at_chance,
    )


def tasks_at_chance(card_training: dict[str, Any]) -> list[str]:
    """Tasks a model card's ``training`` section flags at chance (empty for older cards)."""
    chance = card_training.get("chance") or {}
    return [task for task, t in chance.get("tasks", {}).items() if t.get("at_chance")]
