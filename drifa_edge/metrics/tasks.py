"""Per-task summaries from MC samples (N, S, C): every scalar metric of one model, the
agreement of a candidate with a reference, and their deltas (rows labelled -1 dropped)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from drifa_edge.errors import BadInputError
from drifa_edge.metrics._checks import scored
from drifa_edge.metrics.agreement import kl_divergence, spearman
from drifa_edge.metrics.calibration import adaptive_ece, ece, mce
from drifa_edge.metrics.classification import accuracy, balanced_accuracy, macro_f1, per_class_recall
from drifa_edge.metrics.ranks import accuracy_at_coverage, aupr, auroc, risk_coverage
from drifa_edge.metrics.scoring import brier, nll
from drifa_edge.metrics.uncertainty import refer, summarize


def _scored_samples(samples: np.ndarray, labels: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    samples, labels, _ = _scored(samples, labels, None)
    return samples, labels


def _scored(samples: np.ndarray, labels: np.ndarray | None, used: np.ndarray | None):
    """(samples, labels, used) of the scored rows (label -1 dropped); ``used`` may be None."""
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim != 3:
        raise BadInputError(f"MC samples must be shaped (cases, samples, classes), got {samples.shape}")
    if used is not None:
        used = np.asarray(used)
        if used.shape != (samples.shape[0],):
            raise BadInputError(f"{samples.shape[0]} cases of samples but used shaped {used.shape}")
    if labels is None:
        return samples, None, used
    labels = np.asarray(labels)
    if labels.shape != (samples.shape[0],):
        raise BadInputError(f"{samples.shape[0]} cases of samples but labels shaped {labels.shape}")
    keep = scored(labels)
    if not keep.any():
        raise BadInputError("no scored case (every label is -1)")
    return samples[keep], labels[keep].astype(np.int64), None if used is None else used[keep]


def task_metrics(
    samples: np.ndarray,
    labels: np.ndarray,
    referral_threshold: float,
    *,
    referral_metric: str = "mutual_information",
    bins: int = 15,
    coverages: Sequence[float] = (1.0, 0.9, 0.8),
    used: np.ndarray | None = None,
) -> dict[str, Any]:
    """Every scalar metric of one task from MC samples (N, S, C) and labels (-1 dropped);
    with ``used`` (N,) case i counts only its first ``used[i]`` draws (adaptive T).

    Error detection (AUROC/AUPR of MI and predictive entropy) is ``None`` when the
    model makes no error or no correct prediction: the area is undefined then.
    Risk-coverage ranks cases by the referral metric (most certain first), the
    order in which a deployment keeps them.
    """
    samples, labels, used = _scored(samples, labels, used)
    num_classes = samples.shape[2]
    s = summarize(samples, used)
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
    cand_used: np.ndarray | None = None,
) -> dict[str, Any]:
    """Agreement of a candidate with a reference on the same cases, MC samples (N, S, C) each
    (``cand_used``: the candidate's draws per case, see :func:`task_metrics`).

    Each side refers with its own threshold. ``labels`` only select the scored
    rows (-1 dropped); the metric deltas are the difference of two
    :func:`task_metrics`. A Spearman correlation is ``None`` when an input is
    constant (e.g. MC dropout switched off: every MI is 0).
    """
    ref, _ = _scored_samples(ref_samples, labels)
    cand, _, cand_used = _scored(cand_samples, labels, cand_used)
    if ref.shape[0] != cand.shape[0] or ref.shape[2] != cand.shape[2]:
        raise BadInputError(f"reference {ref.shape} and candidate {cand.shape} differ in cases or classes")
    r, c = summarize(ref), summarize(cand, cand_used)
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
