"""Metrics: pure functions over numpy arrays, no I/O, importable on an edge install (numpy only).

- :mod:`.uncertainty`: softmax, entropy, predictive entropy / expected entropy / mutual
  information of MC samples, referral scores and thresholds;
- :mod:`.calibration`: reliability bins, ECE (equal-width, adaptive), MCE;
- :mod:`.temperature`: temperature scaling and referral thresholds fitted on validation data;
- :mod:`.scoring`: proper scoring rules (NLL, Brier);
- :mod:`.classification`: accuracy, balanced accuracy, per-class recall, macro F1;
- :mod:`.ranks`: average ranks, AUROC / AUPR of an error score, risk-coverage;
- :mod:`.agreement`: KL divergence and Spearman correlation between two models;
- :mod:`.tasks`: every metric of one task, the agreement of two models, their deltas.

Conventions: ``probs`` (N, C) rows sum to 1; ``labels`` (N,) integers in [0, C), -1 marks
a row that is not scored (:func:`scored` drops those; the per-task summaries do it
themselves). Nothing returns a silent NaN: undefined values raise
:class:`~drifa_edge.errors.BadInputError` (AUROC with one class present, Spearman of a
constant, no cases) or are ``None`` where the docstring says so. Log-probabilities are
clipped at ``EPS`` = 1e-12.
"""

from drifa_edge.metrics._checks import EPS, UNSCORED, scored
from drifa_edge.metrics.agreement import kl_divergence, spearman
from drifa_edge.metrics.calibration import (
    adaptive_ece,
    bin_index,
    ece,
    ece_from_parts,
    mce,
    reliability_bins,
)
from drifa_edge.metrics.classification import (
    accuracy,
    balanced_accuracy,
    confusion_matrix,
    macro_f1,
    macro_f1_from_confusion,
    per_class_recall,
)
from drifa_edge.metrics.ranks import accuracy_at_coverage, aupr, auroc, rankdata, rankdata_rows, risk_coverage
from drifa_edge.metrics.scoring import brier, nll
from drifa_edge.metrics.tasks import metric_deltas, pair_metrics, per_case_kl, task_metrics
from drifa_edge.metrics.temperature import fit_calibration, fit_temperature, mc_nll
from drifa_edge.metrics.uncertainty import (
    entropy,
    fit_referral_threshold,
    refer,
    referral_score,
    softmax,
    summarize,
)

__all__ = [
    "EPS", "UNSCORED", "accuracy", "accuracy_at_coverage", "adaptive_ece", "aupr", "auroc",
    "balanced_accuracy", "bin_index", "brier", "confusion_matrix", "ece", "ece_from_parts", "entropy",
    "fit_calibration", "fit_referral_threshold", "fit_temperature", "kl_divergence", "macro_f1",
    "macro_f1_from_confusion", "mc_nll", "mce", "metric_deltas", "nll", "pair_metrics", "per_case_kl",
    "per_class_recall", "rankdata", "rankdata_rows", "refer", "referral_score", "reliability_bins",
    "risk_coverage", "scored", "softmax", "spearman", "summarize", "task_metrics",
]  # fmt: skip
