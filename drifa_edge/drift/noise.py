"""The gate's noise model: a permutation null over the MC draws both runs already made.

Monte Carlo dropout makes two runs of one model disagree. The question the gate
asks of every criterion is whether the candidate differs from the reference by
more than that. Under the null hypothesis "the candidate is the reference" the
candidate's draw t of a case is exchangeable with the reference's draw t of that
case, so swapping the two (each (case, draw) pair with probability 1/2) gives
another run pair that is exactly as likely. Recomputing every statistic after B
random swaps gives its null distribution, measured in the check itself at no
extra inference cost:

- with independent masks (ONNX Runtime, OpenVINO draw in-graph) the swapped
  pairs are two runs of the reference with other draws: the old "noise floor",
  now B of them instead of one;
- with shared masks (torch against torch, one seed) the pair (ref_t, cand_t) saw
  the same mask, so the null is as tight as the shared masks make the comparison;
- the test is exact (Fisher-Pitman permutation test; Good, *Permutation,
  Parametric and Bootstrap Tests of Hypotheses*, 2005, ch. 3): p =
  (1 + #{null >= observed}) / (B + 1) is valid at any number of cases.

It conditions on the test cases: it asks what the build changes on these images,
not on the population they come from. Its alternatives, measured in
``benchmarks/gate_power.py``: K >= 3 reference re-runs (K runs, K(K-1)/2 null
values: too few for a tail at alpha / m) and one re-run with a case bootstrap (the
previous gate: a 3 % false-alarm rate nobody chose).

Pure numpy plus ``scipy.stats.rankdata`` (the ``[check]`` extra).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from drifa_edge.errors import BadInputError, missing_dependency
from drifa_edge.metrics.uncertainty import summarize

_EPS = 1e-12

# name -> True when a larger value of the statistic is worse for the candidate
STATISTICS: dict[str, bool] = {
    "kl": True,  # mean over cases of KL(ref MC mean || cand MC mean), nats
    "spearman_mi": False,  # Spearman of per-case mutual information
    "spearman_entropy": False,  # ... of per-case predictive entropy
    "referral_agreement": False,  # fraction of cases both refer or both keep
    "referral_rate_diff": True,  # |referral rate(cand) - referral rate(ref)|
    "accuracy_delta": False,  # accuracy(cand) - accuracy(ref)
    "macro_f1_delta": False,  # macro-F1(cand) - macro-F1(ref)
    "ece_delta": True,  # ECE(cand) - ECE(ref), equal-width bins
    "changed_cases": True,  # cases whose class or referral differs (reported, not judged)
    "agreement": False,  # fraction of cases with the same predicted class (reported, not judged)
}


@dataclass(frozen=True)
class NullDistribution:
    """Observed value and permutation null of each statistic of one task."""

    observed: dict[str, float]
    null: dict[str, np.ndarray]  # (permutations,) per statistic
    cases: int
    draws: int

    @property
    def permutations(self) -> int:
        return int(next(iter(self.null.values())).size)


def _rankdata_rows(a: np.ndarray) -> np.ndarray:
    try:
        from scipy.stats import rankdata
    except ImportError as e:
        raise missing_dependency("scipy", "check") from e
    return rankdata(a, axis=1)


def _spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman of each row pair (rows, N) with average ranks; an all-tied row gives 0."""
    ra, rb = _rankdata_rows(a), _rankdata_rows(b)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    denom = np.sqrt((ra * ra).sum(axis=1) * (rb * rb).sum(axis=1))
    return np.divide((ra * rb).sum(axis=1), denom, out=np.zeros(len(ra)), where=denom > 0)


def _entropy(p: np.ndarray) -> np.ndarray:
    return -(p * np.log(np.clip(p, _EPS, 1.0))).sum(axis=-1)


def _macro_f1_rows(labels: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """Macro-F1 per row of predictions (rows, N), over the classes present or predicted
    (scikit-learn's ``f1_score(average="macro", zero_division=0)`` on each row)."""
    rows = predicted.shape[0]
    code = np.arange(rows)[:, None] * classes * classes + labels[None, :] * classes + predicted
    cm = np.bincount(code.ravel(), minlength=rows * classes * classes).reshape(rows, classes, classes)
    tp = np.diagonal(cm, axis1=1, axis2=2).astype(np.float64)
    total = cm.sum(axis=2) + cm.sum(axis=1)  # support + predicted
    seen = total > 0
    f1 = np.divide(2 * tp, total, out=np.zeros_like(tp), where=seen)
    return f1.sum(axis=1) / seen.sum(axis=1)


def _ece_rows(confidence: np.ndarray, correct: np.ndarray, bins: int) -> np.ndarray:
    """ECE with equal-width bins (bin i holds (i/bins, (i+1)/bins]) per row (rows, N)."""
    rows, n = confidence.shape
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    flat = (np.arange(rows)[:, None] * bins + index).ravel()
    size = rows * bins
    hits = np.bincount(flat, weights=correct.ravel(), minlength=size).reshape(rows, bins)
    conf = np.bincount(flat, weights=confidence.ravel(), minlength=size).reshape(rows, bins)
    return np.abs(hits - conf).sum(axis=1) / n


@dataclass(frozen=True)
class _Side:
    """Per-case summaries of one run, for ``rows`` runs at once: arrays (rows, N)."""

    mean: np.ndarray  # (rows, N, C)
    predicted: np.ndarray
    confidence: np.ndarray
    predictive_entropy: np.ndarray
    mutual_information: np.ndarray
    expected_entropy: np.ndarray

    @classmethod
    def of(cls, mean: np.ndarray, expected_entropy: np.ndarray) -> _Side:
        predictive = _entropy(mean)
        return cls(
            mean=mean,
            predicted=mean.argmax(axis=-1),
            confidence=mean.max(axis=-1),
            predictive_entropy=predictive,
            mutual_information=np.maximum(predictive - expected_entropy, 0.0),
            expected_entropy=expected_entropy,
        )

    def score(self, metric: str) -> np.ndarray:
        if metric == "least_confidence":
            return 1.0 - self.confidence
        return getattr(self, metric)


def pair_statistics(
    ref: _Side,
    cand: _Side,
    labels: np.ndarray,
    ref_threshold: float,
    cand_threshold: float,
    metric: str,
    bins: int,
) -> dict[str, np.ndarray]:
    """Every statistic of :data:`STATISTICS` for ``rows`` run pairs at once: (rows,) each."""
    classes = ref.mean.shape[-1]
    kl = (ref.mean * (np.log(np.clip(ref.mean, _EPS, 1.0)) - np.log(np.clip(cand.mean, _EPS, 1.0)))).sum(-1)
    referred_ref = ref.score(metric) > ref_threshold
    referred_cand = cand.score(metric) > cand_threshold
    correct_ref = (ref.predicted == labels).astype(np.float64)
    correct_cand = (cand.predicted == labels).astype(np.float64)
    changed = (ref.predicted != cand.predicted) | (referred_ref != referred_cand)
    return {
        "kl": np.maximum(kl, 0.0).mean(axis=1),
        "spearman_mi": _spearman_rows(ref.mutual_information, cand.mutual_information),
        "spearman_entropy": _spearman_rows(ref.predictive_entropy, cand.predictive_entropy),
        "referral_agreement": (referred_ref == referred_cand).mean(axis=1),
        "referral_rate_diff": np.abs(referred_cand.mean(axis=1) - referred_ref.mean(axis=1)),
        "accuracy_delta": correct_cand.mean(axis=1) - correct_ref.mean(axis=1),
        "macro_f1_delta": _macro_f1_rows(labels, cand.predicted, classes)
        - _macro_f1_rows(labels, ref.predicted, classes),
        "ece_delta": _ece_rows(cand.confidence, correct_cand, bins)
        - _ece_rows(ref.confidence, correct_ref, bins),
        "changed_cases": changed.sum(axis=1).astype(np.float64),
        "agreement": (ref.predicted == cand.predicted).mean(axis=1),
    }


def _check_samples(ref: np.ndarray, cand: np.ndarray, labels: np.ndarray) -> None:
    if ref.ndim != 3 or ref.shape != cand.shape:
        raise BadInputError(
            "the permutation null needs reference and candidate MC probabilities of one shape "
            f"(cases, draws, classes), got {ref.shape} and {cand.shape}; run both with the same --samples"
        )
    if labels.shape != (ref.shape[0],):
        raise BadInputError(f"labels must be shaped ({ref.shape[0]},), got {labels.shape}")
    if not (np.isfinite(ref).all() and np.isfinite(cand).all()):
        raise BadInputError("MC probabilities contain NaN or Inf")


def _swap_batches(rng: np.random.Generator, total: int, cases: int, draws: int) -> Iterator[np.ndarray]:
    """Swap masks (cases, rows, draws) of 0/1 (float32) in batches of at most ~4 M entries.
    Fair coins from random bytes (8 per byte): the masks are the hot loop's input."""
    rows = max(1, 4_000_000 // max(1, cases * draws))
    for start in range(0, total, rows):
        shape = (cases, min(rows, total - start), draws)
        size = int(np.prod(shape))
        bits = np.unpackbits(np.frombuffer(rng.bytes((size + 7) // 8), dtype=np.uint8), count=size)
        yield bits.reshape(shape).astype(np.float32)


def permutation_null(
    ref: np.ndarray,
    cand: np.ndarray,
    labels: np.ndarray,
    ref_threshold: float,
    cand_threshold: float,
    *,
    metric: str = "mutual_information",
    bins: int = 15,
    permutations: int = 999,
    seed: int = 0,
    cand_used: np.ndarray | None = None,
) -> NullDistribution:
    """Observed statistics of (reference, candidate) and their null over random draw swaps.

    ``cand_used`` (N,): adaptive T. The observed candidate is then each case's first
    ``cand_used[i]`` draws (what its answer rests on), while the null swaps all T draws of
    both runs: it is two full fixed-T runs of the reference, and the question becomes
    whether the adaptive answers differ from the reference by more than a second fixed-T
    run does. ``cand`` must hold every case's T draws (``run_adaptive(complete=True)``).

    ``ref`` and ``cand`` are MC probabilities (N, T, C) of the same N cases (T draws,
    member blocks in the same order), ``labels`` (N,) class indices. A case is referred
    when its ``metric`` is strictly above the threshold; the observed candidate uses its
    own threshold, every swapped pair the reference's (the null world is "the candidate
    is the reference"). Cost: about B x N x T x C multiply-adds (a BLAS matmul).
    """
    ref, cand = np.asarray(ref, dtype=np.float64), np.asarray(cand, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    _check_samples(ref, cand, labels)
    if permutations < 1:
        raise BadInputError(f"permutations must be >= 1, got {permutations}")
    cases, draws, _ = ref.shape
    mean_ref, mean_cand = ref.mean(axis=1), cand.mean(axis=1)  # (N, C)
    h_ref, h_cand = _entropy(ref), _entropy(cand)  # (N, T) per-draw entropies
    eh_ref, eh_cand = h_ref.mean(axis=1), h_cand.mean(axis=1)
    obs_mean, obs_eh = mean_cand, eh_cand
    if cand_used is not None:
        s = summarize(cand, np.asarray(cand_used))
        obs_mean, obs_eh = s["mean"], s["expected_entropy"]
    observed = pair_statistics(
        _Side.of(mean_ref[None], eh_ref[None]),
        _Side.of(obs_mean[None], obs_eh[None]),
        labels, ref_threshold, cand_threshold, metric, bins,
    )  # fmt: skip
    # (N, T, C + 1): what swapping draw t moves between the two means, and between the two
    # expected entropies (last column); float32 for the matmul, ~1e-7 against probabilities
    diff = (np.concatenate([cand - ref, (h_cand - h_ref)[..., None]], axis=2) / draws).astype(np.float32)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in STATISTICS}
    for swap in _swap_batches(np.random.default_rng(seed), permutations, cases, draws):
        moved_all = np.matmul(swap, diff).transpose(1, 0, 2).astype(np.float64)  # (rows, N, C + 1)
        moved, moved_h = moved_all[..., :-1], moved_all[..., -1]
        a = _Side.of(mean_ref + moved, eh_ref + moved_h)
        b = _Side.of(mean_cand - moved, eh_cand - moved_h)
        for k, v in pair_statistics(a, b, labels, ref_threshold, ref_threshold, metric, bins).items():
            parts[k].append(v)
    return NullDistribution(
        observed={k: float(v[0]) for k, v in observed.items()},
        null={k: np.concatenate(v) for k, v in parts.items()},
        cases=cases,
        draws=draws,
    )
