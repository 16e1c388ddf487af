"""Classification, calibration and uncertainty metrics: pure numpy, no I/O.

Conventions
- ``probs`` (N, C) rows sum to 1; ``labels`` / ``y_true`` (N,) integers in [0, C).
  A label of -1 marks a row that is not scored (the shorter dataset of a pair is
  repeated to the longer one's length); :func:`scored` drops those rows, the
  per-task summaries :func:`task_metrics` and :func:`pair_metrics` do it themselves.
- Nothing here returns a silent NaN. Undefined values raise :class:`BadInputError`
  (AUROC/AUPR with one class present, Spearman of a constant, no cases at all)
  or are written as ``None`` where the docstring says so (recall of a class that
  has no case). Empty calibration bins are skipped.
- Log-probabilities are clipped at ``EPS`` = 1e-12 so that a probability of
  exactly 0 costs 27.6 nats instead of infinity.
- Every function taking probabilities checks them (:func:`check_probabilities`): finite,
  in [0, 1] (within ``PROB_TOLERANCE``), each row summing to 1 within ``PROB_TOLERANCE``
  = 1e-3 (float16 softmax outputs and 6-digit JSON round-off pass; logits and
  percentages do not). A violation raises :class:`ProbabilityError` saying what was received.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from drifa_edge.errors import BadInputError, ProbabilityError
from drifa_edge.inference.uncertainty import refer, summarize

EPS = 1e-12
UNSCORED = -1
PROB_TOLERANCE = 1e-3


# ----------------------------------------------------------------------------- input checks


def _check_labels(y: np.ndarray, num_classes: int | None = None, name: str = "labels") -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or y.size == 0:
        raise BadInputError(f"{name} must be a non-empty 1-D array, got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.mod(y, 1) == 0):
            raise BadInputError(f"{name} must be integers, got dtype {y.dtype}")
        y = y.astype(np.int64)
    if y.min() < 0 or (num_classes is not None and y.max() >= num_classes):
        raise BadInputError(
            f"{name} must lie in [0, {num_classes}), got range [{y.min()}, {y.max()}]; "
            "drop unscored rows (-1) with drift.metrics.scored first"
        )
    return y


def check_probabilities(probs: np.ndarray, name: str = "probs") -> np.ndarray:
    """``probs`` as float64 if every row is a probability vector, else :class:`ProbabilityError`."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.size and not np.isfinite(probs).all():
        bad = int((~np.isfinite(probs)).any(axis=-1).sum()) if probs.ndim else 1
        raise ProbabilityError(f"{name} contain NaN or Inf ({bad} row(s)); pass finite class probabilities")
    if probs.size == 0:
        return probs
    lo, hi = float(probs.min()), float(probs.max())
    if lo < -PROB_TOLERANCE or hi > 1 + PROB_TOLERANCE:
        raise ProbabilityError(
            f"{name} must be probabilities in [0, 1], got values in [{lo:.4g}, {hi:.4g}]; "
            "logits? apply softmax first (percentages: divide by 100)"
        )
    sums = probs.sum(axis=-1)
    worst = float(np.abs(sums - 1.0).max())
    if worst > PROB_TOLERANCE:
        k = int(np.argmax(np.abs(sums - 1.0)))
        raise ProbabilityError(
            f"{name}: rows must sum to 1 (within {PROB_TOLERANCE:g}), got row sums in "
            f"[{float(sums.min()):.4g}, {float(sums.max()):.4g}] (row {k}: {float(sums.flat[k]):.4g}); "
            "pass softmax outputs, one row per case"
        )
    return probs


def _check_probs(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise BadInputError(f"probs must be shaped (cases, classes >= 2), got {probs.shape}")
    probs = check_probabilities(probs)
    labels = _check_labels(labels, probs.shape[1])
    if labels.shape[0] != probs.shape[0]:
        raise BadInputError(f"{probs.shape[0]} rows of probs but {labels.shape[0]} labels")
    return probs, labels


def _check_pair(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    y_true = _check_labels(y_true, num_classes, "y_true")
    y_pred = _check_labels(y_pred, num_classes, "y_pred")
    if y_true.shape != y_pred.shape:
        raise BadInputError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in length")
    return y_true, y_pred


def _check_scores(scores: np.ndarray, flags: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    flags = np.asarray(flags).astype(bool)
    if scores.ndim != 1 or scores.shape != flags.shape or scores.size == 0:
        raise BadInputError(f"{name}: need two non-empty 1-D arrays of equal length, got {scores.shape}")
    if not np.isfinite(scores).all():
        raise BadInputError(f"{name}: scores contain NaN or Inf")
    return scores, flags


def scored(labels: np.ndarray) -> np.ndarray:
    """Boolean mask of the rows that carry a label (label != -1)."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise BadInputError(f"labels must be 1-D, got shape {labels.shape}")
    return labels != UNSCORED


# ----------------------------------------------------------------------------- label metrics


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) counts, rows = true class, columns = predicted class."""
    y_true, y_pred = _check_pair(y_true, y_pred, num_classes)
    return np.bincount(y_true * num_classes + y_pred, minlength=num_classes**2).reshape(
        num_classes, num_classes
    )


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    y_true = _check_labels(y_true, name="y_true")
    y_pred = _check_labels(y_pred, name="y_pred")
    if y_true.shape != y_pred.shape:
        raise BadInputError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in length")
    return float(np.mean(y_true == y_pred))


def per_class_recall(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> list[float | None]:
    """Recall of each class; ``None`` for a class with no true case (undefined)."""
    cm = confusion_matrix(y_true, y_pred, num_classes)
    support = cm.sum(axis=1)
    return [float(cm[c, c] / support[c]) if support[c] else None for c in range(num_classes)]


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """Mean recall over the classes present in ``y_true`` (absent classes skipped)."""
    recalls = [r for r in per_class_recall(y_true, y_pred, num_classes) if r is not None]
    return float(np.mean(recalls))


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """Unweighted mean F1 over the classes that occur in ``y_true`` or ``y_pred``.

    A class that is neither present nor predicted has no F1 and is skipped; a
    class present but never predicted (or predicted but absent) scores 0.
    Equals scikit-learn's ``f1_score(average="macro", zero_division=0)``.
    """
    return macro_f1_from_confusion(confusion_matrix(y_true, y_pred, num_classes))


def macro_f1_from_confusion(cm: np.ndarray) -> float:
    """:func:`macro_f1` of a (C, C) confusion matrix (rows true, columns predicted)."""
    tp = np.diag(cm).astype(np.float64)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    seen = (support + predicted) > 0
    f1 = 2 * tp[seen] / (support[seen] + predicted[seen])
    return float(f1.mean())


# ----------------------------------------------------------------------------- proper scores


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the true class (nats)."""
    probs, labels = _check_probs(probs, labels)
    p = probs[np.arange(labels.size), labels]
    return float(-np.mean(np.log(np.clip(p, EPS, 1.0))))


def brier(probs: np.ndarray, labels: np.ndarray) -> float:
    """Multi-class Brier score: mean over cases of sum_c (p_c - 1[c = y])^2, in [0, 2]."""
    probs, labels = _check_probs(probs, labels)
    onehot = np.zeros_like(probs)
    onehot[np.arange(labels.size), labels] = 1.0
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))


# ----------------------------------------------------------------------------- calibration


def bin_index(confidence: np.ndarray, bins: int) -> np.ndarray:
    """Equal-width bin of each confidence: bin i holds (i/bins, (i+1)/bins], 0 goes to bin 0."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    return np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)


def ece_from_parts(index: np.ndarray, confidence: np.ndarray, correct: np.ndarray, bins: int) -> float:
    """:func:`ece` from each case's bin (:func:`bin_index`), confidence and correctness (0/1)."""
    count = np.bincount(index, minlength=bins)
    gap = np.abs(np.bincount(index, weights=correct, minlength=bins) - np.bincount(index, confidence, bins))
    return float(gap.sum() / count.sum())


def reliability_bins(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> dict[str, np.ndarray]:
    """Equal-width confidence bins over [0, 1]: ``edges`` (bins+1), and per bin
    ``count``, ``accuracy`` and ``confidence`` (0 where ``count`` is 0).

    Bin i holds confidences in (edges[i], edges[i+1]]; a confidence of exactly 0
    goes to the first bin.
    """
    if bins < 1:
        raise BadInputError(f"bins must be >= 1, got {bins}")
    probs, labels = _check_probs(probs, labels)
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = bin_index(conf, bins)
    count = np.bincount(idx, minlength=bins)
    safe = np.maximum(count, 1)
    return {
        "edges": edges,
        "count": count,
        "accuracy": np.bincount(idx, weights=correct, minlength=bins) / safe,
        "confidence": np.bincount(idx, weights=conf, minlength=bins) / safe,
    }


def ece(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error with equal-width bins: sum_b n_b/N |acc_b - conf_b|."""
    r = reliability_bins(probs, labels, bins)
    gap = np.abs(r["accuracy"] - r["confidence"])
    return float(np.sum(r["count"] * gap) / r["count"].sum())


def mce(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Maximum calibration error: the largest |acc_b - conf_b| over non-empty bins."""
    r = reliability_bins(probs, labels, bins)
    gap = np.abs(r["accuracy"] - r["confidence"])
    return float(gap[r["count"] > 0].max())


def adaptive_ece(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE with equal-mass bins: cases sorted by confidence (stable sort, ties in
    input order) and split into ``min(bins, N)`` groups whose sizes differ by at most one."""
    if bins < 1:
        raise BadInputError(f"bins must be >= 1, got {bins}")
    probs, labels = _check_probs(probs, labels)
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    order = np.argsort(conf, kind="stable")
    total = 0.0
    for group in np.array_split(order, min(bins, conf.size)):
        total += group.size * abs(correct[group].mean() - conf[group].mean())
    return float(total / conf.size)


# ----------------------------------------------------------------------------- ranking


def rankdata(a: np.ndarray) -> np.ndarray:
    """Ranks 1..N with ties given their average rank (scipy's ``method="average"``)."""
    a = np.asarray(a, dtype=np.float64)
    order = np.argsort(a, kind="stable")
    sorted_a = a[order]
    # first index of each run of equal values, and the run lengths
    starts = np.flatnonzero(np.r_[True, sorted_a[1:] != sorted_a[:-1]])
    lengths = np.diff(np.r_[starts, a.size])
    avg = starts + (lengths + 1) / 2.0  # mean of ranks start+1 .. start+length
    ranks = np.empty(a.size)
    ranks[order] = np.repeat(avg, lengths)
    return ranks


def rankdata_rows(a: np.ndarray) -> np.ndarray:
    """:func:`rankdata` of every row of a 2-D array at once (average ranks for ties)."""
    a = np.asarray(a, dtype=np.float64)
    rows, n = a.shape
    order = np.argsort(a, axis=1)  # any sort: tied values share their average rank anyway
    sorted_a = np.take_along_axis(a, order, axis=1)
    starts = np.ones((rows, n), dtype=bool)
    starts[:, 1:] = sorted_a[:, 1:] != sorted_a[:, :-1]
    ends = np.ones((rows, n), dtype=bool)
    ends[:, :-1] = starts[:, 1:]
    position = np.broadcast_to(np.arange(n), (rows, n))
    first = np.maximum.accumulate(np.where(starts, position, 0), axis=1)
    last = np.minimum.accumulate(np.where(ends, position, n - 1)[:, ::-1], axis=1)[:, ::-1]
    ranks = np.empty((rows, n))
    np.put_along_axis(ranks, order, (first + last) / 2.0 + 1.0, axis=1)
    return ranks


def auroc(scores: np.ndarray, positives: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for separating ``positives`` (True)
    from the rest; ties count one half (Mann-Whitney U with average ranks).

    Raises BadInputError when only one class is present (the area is undefined).
    """
    scores, positives = _check_scores(scores, positives, "auroc")
    n_pos = int(positives.sum())
    n_neg = positives.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise BadInputError(f"AUROC needs positives and negatives, got {n_pos} and {n_neg}")
    ranks = rankdata(scores)
    u = ranks[positives].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def aupr(scores: np.ndarray, positives: np.ndarray) -> float:
    """Average precision: sum over distinct thresholds of (R_k - R_{k-1}) P_k, with
    tied scores entering together (scikit-learn's ``average_precision_score``).

    Raises BadInputError when there is no positive (recall undefined).
    """
    scores, positives = _check_scores(scores, positives, "aupr")
    n_pos = int(positives.sum())
    if n_pos == 0:
        raise BadInputError("AUPR needs at least one positive case, got none")
    order = np.argsort(-scores, kind="stable")
    s, pos = scores[order], positives[order]
    last_of_tie = np.r_[s[1:] != s[:-1], True]
    tp = np.cumsum(pos)[last_of_tie]
    seen = np.flatnonzero(last_of_tie) + 1
    precision = tp / seen
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def risk_coverage(confidence: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Selective-prediction curve: keep the most confident cases first.

    Returns (coverages, risks, aurc). Cases with equal confidence cannot be
    separated, so the curve has one point per distinct confidence (coverage =
    share of cases at least that confident, risk = their error rate), and AURC
    is the step-function area sum_k (coverage_k - coverage_{k-1}) * risk_k. With
    no ties that is the usual (1/N) sum_k risk(top k). Pass ``-uncertainty`` to
    rank by an uncertainty score.
    """
    confidence, correct = _check_scores(confidence, correct, "risk_coverage")
    order = np.argsort(-confidence, kind="stable")
    c, ok = confidence[order], correct[order]
    last_of_tie = np.r_[c[1:] != c[:-1], True]
    kept = np.flatnonzero(last_of_tie) + 1
    errors = np.cumsum(~ok)[last_of_tie]
    coverages = kept / c.size
    risks = errors / kept
    aurc = float(np.sum(np.diff(np.r_[0.0, coverages]) * risks))
    return coverages, risks, aurc


def accuracy_at_coverage(confidence: np.ndarray, correct: np.ndarray, coverage: float) -> float:
    """Accuracy on the ceil(coverage * N) most confident cases (ties in input order)."""
    confidence, correct = _check_scores(confidence, correct, "accuracy_at_coverage")
    if not 0.0 < coverage <= 1.0:
        raise BadInputError(f"coverage must be in (0, 1], got {coverage}")
    keep = max(1, math.ceil(coverage * confidence.size - 1e-9))
    order = np.argsort(-confidence, kind="stable")[:keep]
    return float(correct[order].mean())


# ----------------------------------------------------------------------------- agreement between two models


def kl_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Per-case KL(p || q) in nats for rows of (N, C); 0 log 0 = 0, q clipped at EPS."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if p.shape != q.shape or p.ndim != 2:
        raise BadInputError(f"KL needs two (cases, classes) arrays of one shape, got {p.shape} and {q.shape}")
    p, q = check_probabilities(p, "KL p"), check_probabilities(q, "KL q")
    ratio = np.log(np.clip(p, EPS, 1.0)) - np.log(np.clip(q, EPS, 1.0))
    return np.maximum(np.sum(np.where(p > 0, p * ratio, 0.0), axis=1), 0.0)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (Pearson correlation of average ranks).

    Raises BadInputError when either input is constant (the correlation is undefined).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape or a.size < 2:
        raise BadInputError(f"spearman needs two 1-D arrays of equal length >= 2, got {a.shape}, {b.shape}")
    ra, rb = rankdata(a), rankdata(b)
    ra -= ra.mean()
    rb -= rb.mean()
    denom = math.sqrt(float(ra @ ra) * float(rb @ rb))
    if denom == 0.0:
        raise BadInputError("spearman: one input is constant, the correlation is undefined")
    return float(np.clip((ra @ rb) / denom, -1.0, 1.0))


# ----------------------------------------------------------------------------- per-task summaries


def _scored_samples(samples: np.ndarray, labels: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim != 3:
        raise BadInputError(f"MC samples must be shaped (cases, samples, classes), got {samples.shape}")
    if labels is None:
        return samples, None
    labels = np.asarray(labels)
    if labels.shape != (samples.shape[0],):
        raise BadInputError(f"{samples.shape[0]} cases of samples but labels shaped {labels.shape}")
    keep = scored(labels)
    if not keep.any():
        raise BadInputError("no scored case (every label is -1)")
    return samples[keep], labels[keep].astype(np.int64)


def task_metrics(
    samples: np.ndarray,
    labels: np.ndarray,
    referral_threshold: float,
    *,
    referral_metric: str = "mutual_information",
    bins: int = 15,
    coverages: Sequence[float] = (1.0, 0.9, 0.8),
) -> dict[str, Any]:
    """Every scalar metric of one task from MC samples (N, S, C) and labels (-1 dropped).

    Error detection (AUROC/AUPR of MI and predictive entropy) is ``None`` when the
    model makes no error or no correct prediction: the area is undefined then.
    Risk-coverage ranks cases by the referral metric (most certain first), the
    order in which a deployment keeps them.
    """
    samples, labels = _scored_samples(samples, labels)
    num_classes = samples.shape[2]
    s = summarize(samples)
    probs, pred = s["mean"], s["predicted"]
    correct = pred == labels
    errors = ~correct
    referred = refer(s[referral_metric], referral_threshold)
    out: dict[str, Any] = {
        "cases": int(labels.size),
        "accuracy": accuracy(labels, pred),
        "balanced_accuracy": balanced_accuracy(labels, pred, num_classes),
        "macro_f1": macro_f1(labels, pred, num_classes),
        "per_class_recall": per_class_recall(labels, pred, num_classes),
        "nll": nll(probs, labels),
        "brier": brier(probs, labels),
        "ece": ece(probs, labels, bins),
        "adaptive_ece": adaptive_ece(probs, labels, bins),
        "mce": mce(probs, labels, bins),
        "mean_confidence": float(s["confidence"].mean()),
        "mean_mutual_information": float(s["mutual_information"].mean()),
        "mean_predictive_entropy": float(s["predictive_entropy"].mean()),
    }
    for name in ("mutual_information", "predictive_entropy"):
        short = "mi" if name == "mutual_information" else "entropy"
        defined = 0 < errors.sum() < errors.size
        out[f"error_auroc_{short}"] = auroc(s[name], errors) if defined else None
        out[f"error_aupr_{short}"] = aupr(s[name], errors) if defined else None
    _, _, out["aurc"] = risk_coverage(-s[referral_metric], correct)
    for cov in coverages:
        out[f"accuracy_at_{round(cov * 100)}"] = accuracy_at_coverage(-s[referral_metric], correct, cov)
    out["referral_threshold"] = float(referral_threshold)
    out["referral_rate"] = float(referred.mean())
    out["accuracy_retained"] = float(correct[~referred].mean()) if (~referred).any() else None
    return out


def pair_metrics(
    ref_samples: np.ndarray,
    cand_samples: np.ndarray,
    ref_threshold: float,
    cand_threshold: float,
    labels: np.ndarray | None = None,
    *,
    referral_metric: str = "mutual_information",
) -> dict[str, Any]:
    """Agreement of a candidate with a reference on the same cases, MC samples (N, S, C) each.

    Each side refers with its own threshold. ``labels`` only select the scored
    rows (-1 dropped); the metric deltas are the difference of two
    :func:`task_metrics`. A Spearman correlation is ``None`` when an input is
    constant (e.g. MC dropout switched off: every MI is 0).
    """
    ref, _ = _scored_samples(ref_samples, labels)
    cand, _ = _scored_samples(cand_samples, labels)
    if ref.shape[0] != cand.shape[0] or ref.shape[2] != cand.shape[2]:
        raise BadInputError(f"reference {ref.shape} and candidate {cand.shape} differ in cases or classes")
    r, c = summarize(ref), summarize(cand)
    kl = kl_divergence(r["mean"], c["mean"])
    ref_refer = refer(r[referral_metric], ref_threshold)
    cand_refer = refer(c[referral_metric], cand_threshold)
    out: dict[str, Any] = {
        "cases": int(ref.shape[0]),
        "agreement": float(np.mean(r["predicted"] == c["predicted"])),
        "mean_kl": float(kl.mean()),
        "referral_agreement": float(np.mean(ref_refer == cand_refer)),
        "referral_rate_ref": float(ref_refer.mean()),
        "referral_rate_cand": float(cand_refer.mean()),
        "referral_rate_diff": float(abs(cand_refer.mean() - ref_refer.mean())),
    }
    for name, short in (("mutual_information", "mi"), ("predictive_entropy", "entropy")):
        constant = np.ptp(r[name]) == 0 or np.ptp(c[name]) == 0
        out[f"spearman_{short}"] = None if constant else spearman(r[name], c[name])
    return out


def per_case_kl(ref_samples: np.ndarray, cand_samples: np.ndarray, labels: np.ndarray | None = None):
    """KL(mean_s ref || mean_s cand) of every scored case, shape (N_scored,)."""
    ref, _ = _scored_samples(ref_samples, labels)
    cand, _ = _scored_samples(cand_samples, labels)
    return kl_divergence(ref.mean(axis=1), cand.mean(axis=1))


def metric_deltas(ref: dict[str, Any], cand: dict[str, Any]) -> dict[str, float | None]:
    """candidate - reference for every scalar metric the two :func:`task_metrics` share."""
    out: dict[str, float | None] = {}
    for key, value in ref.items():
        other = cand.get(key)
        if key == "cases" or isinstance(value, list):
            continue
        out[key] = None if value is None or other is None else float(other - value)
    return out
