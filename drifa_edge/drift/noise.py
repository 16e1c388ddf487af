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

from drifa_edge.artifact.ood import TaskDensity
from drifa_edge.errors import BadInputError
from drifa_edge.metrics.mahalanobis import mahalanobis_scores, whitening
from drifa_edge.metrics.ranks import rankdata_rows
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
    # only where the reference has an OOD density (ood.npz) and both runs return the embedding
    "spearman_ood": False,  # Spearman of per-case OOD score (Mahalanobis of the MC-mean features)
    "ood_agreement": False,  # fraction of cases both flag OOD or both do not
    "changed_cases": True,  # cases whose class or referral differs (reported, not judged)
    "agreement": False,  # fraction of cases with the same predicted class (reported, not judged)
}


OOD_STATISTICS = ("spearman_ood", "ood_agreement")


@dataclass(frozen=True)
class OodFeatures:
    """One task's inputs of the OOD criteria: every draw's pooled embedding of both runs,
    (N, T, E) float, E = all M*W3 columns (each density selects its own), and the OOD
    densities of ``ood.npz``. The observed candidate is scored with its own density
    (as it ships); every swapped pair with the reference's, the null world being "the
    candidate is the reference"."""

    reference: np.ndarray
    candidate: np.ndarray
    density: TaskDensity
    candidate_density: TaskDensity
    # each run's prefix statistics of this task, (N, 2 * W0) (inference.ood.prefix_statistics):
    # needed where a density has a prefix part (ood.npz format 2, the default since issue 18's
    # second round); the prefix runs once per case, so swapping MC draws never moves it
    reference_prefix: np.ndarray | None = None
    candidate_prefix: np.ndarray | None = None

    def __post_init__(self) -> None:
        for d, stats, side in (
            (self.density, self.reference_prefix, "reference"),
            (self.candidate_density, self.candidate_prefix, "candidate"),
        ):
            if d.prefix is not None and stats is None:
                raise BadInputError(
                    f"the {side}'s OOD density has a prefix part (ood.npz format 2): pass that run's "
                    "prefix statistics (drifa_edge.inference.ood.run_prefix_statistics)"
                )
        ref, cand = np.asarray(self.reference), np.asarray(self.candidate)
        if ref.ndim != 3 or ref.shape != cand.shape:
            raise BadInputError(
                "the OOD criteria need both runs' per-draw embeddings of one shape (cases, draws, "
                f"features), got {ref.shape} and {cand.shape}"
            )
        if not (np.isfinite(ref).all() and np.isfinite(cand).all()):
            raise BadInputError("per-draw embeddings contain NaN or Inf")
        for d in (self.density, self.candidate_density):
            if d.columns[1] > ref.shape[2]:
                raise BadInputError(
                    f"the OOD density reads embedding columns {d.columns}, the runs gave {ref.shape[2]}"
                )


_WHITENED: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}  # id(precision) -> (it, W, centres)


def _whitened(density: TaskDensity) -> tuple[np.ndarray, np.ndarray]:
    """(W, class means @ W) of a density, kept for the last few densities: a benchmark
    judges hundreds of run pairs against one density, and the eigendecomposition is the
    costliest step of a small check."""
    hit = _WHITENED.get(id(density.precision))
    if hit is not None and hit[0] is density.precision:
        return hit[1], hit[2]
    w = whitening(density.precision)
    if len(_WHITENED) >= 8:
        _WHITENED.clear()
    _WHITENED[id(density.precision)] = (density.precision, w, density.means @ w)
    return w, density.means @ w


def _prefix_term(density: TaskDensity, prefix_stats: np.ndarray | None) -> np.ndarray | float:
    """The prefix part of a format-2 OOD score, (N,) in val standard deviations (0.0 for an
    embedding-only density): see :func:`drifa_edge.inference.ood.task_score`."""
    p = density.prefix
    if p is None:
        return 0.0
    return (mahalanobis_scores(np.asarray(prefix_stats, dtype=np.float64), p.means, p.precision) - p.center) / p.scale


def _combined(density: TaskDensity, embedding_score: np.ndarray, prefix_term) -> np.ndarray:
    """The score a record carries from the embedding part's Mahalanobis score (any shape ending
    in N) and the prefix term (N,): the embedding score itself for an embedding-only density,
    else prefix term + the embedding score standardised on val (Lee et al. 2018's feature
    ensemble with equal weights, as :func:`drifa_edge.inference.ood.task_score`)."""
    p = density.prefix
    if p is None:
        return embedding_score
    return prefix_term + (embedding_score - p.embedding_center) / p.embedding_scale


def _ood_statistics(score_a, score_b, threshold_a: float, threshold_b: float) -> dict[str, np.ndarray]:
    """Spearman of the OOD scores and OOD-flag agreement for (rows, N) score pairs."""
    return {
        "spearman_ood": _spearman_rows(score_a, score_b),
        "ood_agreement": ((score_a > threshold_a) == (score_b > threshold_b)).mean(axis=1),
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


def _spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman of each row pair (rows, N) with average ranks; an all-tied row gives 0."""
    ra, rb = rankdata_rows(a), rankdata_rows(b)
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
    ood: OodFeatures | None = None,
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

    With ``ood`` the OOD criteria (:data:`OOD_STATISTICS`) join: the features are
    whitened with the reference density's precision (:func:`whitening`), so the score of
    a swapped run's MC-mean features is a nearest-centre distance of a linear update:
    2K more matmul columns (the update along each centre direction, per side) and one
    (T, T) quadratic form per case (its squared length).
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
    classes = ref.shape[2]
    # (N, T, C + 1 [+ D]): what swapping draw t moves between the two means, between the two
    # expected entropies (column C) and between the two whitened mean features (the rest);
    # float32 for the matmul, ~1e-7 against probabilities
    columns = [cand - ref, (h_cand - h_ref)[..., None]]
    gram = None
    if ood is not None:
        # Score of a swapped run: min_k ||m + u - c_k||^2 in whitened space, u = the moved
        # features = sum_t s_t d_t. Expanded: ||m - c_k||^2 + 2 (m - c_k).u + ||u||^2, where
        # (m - c_k).u = sum_t s_t (m - c_k).d_t is K more matmul columns per side and
        # ||u||^2 = s^T G s with G = the (T, T) Gram matrix of d_t: far cheaper than D columns.
        dens = ood.density
        w, centres = _whitened(dens)  # (D, D), (K, D)
        f_ref = np.asarray(ood.reference, dtype=np.float64)[..., dens.columns[0] : dens.columns[1]] @ w
        f_cand = np.asarray(ood.candidate, dtype=np.float64)[..., dens.columns[0] : dens.columns[1]] @ w
        to_a = f_ref.mean(axis=1)[:, None, :] - centres[None]  # (N, K, D): reference mean - centres
        to_b = f_cand.mean(axis=1)[:, None, :] - centres[None]
        d = (f_cand - f_ref) / draws  # (N, T, D) what swapping draw t moves
        k = centres.shape[0]
        columns.append(np.matmul(d, to_a.transpose(0, 2, 1)) * draws)  # (N, T, K), / draws below
        columns.append(np.matmul(d, to_b.transpose(0, 2, 1)) * draws)
        near_a, near_b = (to_a * to_a).sum(-1), (to_b * to_b).sum(-1)  # (N, K)
        gram = np.matmul(d, d.transpose(0, 2, 1)).astype(np.float32)  # (N, T, T)
        cd = ood.candidate_density  # the observed pair: each run scored as it ships
        # the null world is "the candidate is the reference": every swapped pair gets the
        # reference's prefix term (as it gets the reference's density and threshold)
        prefix_null = _prefix_term(dens, ood.reference_prefix)
        score_ref = _combined(
            dens,
            mahalanobis_scores(dens.select(np.mean(ood.reference, axis=1)), dens.means, dens.precision),
            prefix_null,
        )
        score_cand = _combined(
            cd,
            mahalanobis_scores(cd.select(np.mean(ood.candidate, axis=1)), cd.means, cd.precision),
            _prefix_term(cd, ood.candidate_prefix),
        )
        observed.update(_ood_statistics(score_ref[None], score_cand[None], dens.threshold, cd.threshold))
    diff = (np.concatenate(columns, axis=2) / draws).astype(np.float32)
    names = [k for k in STATISTICS if k in observed]
    parts: dict[str, list[np.ndarray]] = {k: [] for k in names}
    for swap in _swap_batches(np.random.default_rng(seed), permutations, cases, draws):
        moved_all = np.matmul(swap, diff).transpose(1, 0, 2).astype(np.float64)  # (rows, N, C + 1 [+ 2K])
        moved, moved_h = moved_all[..., :classes], moved_all[..., classes]
        a = _Side.of(mean_ref + moved, eh_ref + moved_h)
        b = _Side.of(mean_cand - moved, eh_cand - moved_h)
        stats = pair_statistics(a, b, labels, ref_threshold, ref_threshold, metric, bins)
        if gram is not None:
            dot_a = moved_all[..., classes + 1 : classes + 1 + k]  # (rows, N, K)
            dot_b = moved_all[..., classes + 1 + k :]
            squared = (
                (np.matmul(swap, gram) * swap).sum(axis=2).T.astype(np.float64)[..., None]
            )  # (rows, N, 1)
            stats.update(
                _ood_statistics(
                    _combined(dens, np.maximum((near_a + 2 * dot_a + squared).min(axis=-1), 0.0), prefix_null),
                    _combined(dens, np.maximum((near_b - 2 * dot_b + squared).min(axis=-1), 0.0), prefix_null),
                    dens.threshold,
                    dens.threshold,
                )
            )
        for name, v in stats.items():
            parts[name].append(v)
    return NullDistribution(
        observed={k: float(v[0]) for k, v in observed.items()},
        null={k: np.concatenate(v) for k, v in parts.items()},
        cases=cases,
        draws=draws,
    )
