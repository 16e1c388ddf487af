"""Accuracy, calibration and uncertainty drift of a candidate build against a reference.

- :mod:`drifa_edge.metrics`: the metrics, temperature scaling and referral thresholds (pure numpy);
- :mod:`~drifa_edge.drift.stats`: the paired tests (Wilcoxon signed-rank, paired bootstrap);
- :mod:`~drifa_edge.drift.policy`: the thresholds (``calibration/*.toml``);
- :mod:`~drifa_edge.drift.gate`: the criteria and the report object;
- :mod:`~drifa_edge.drift.check`: ``drifa-edge check`` as a function;
- :mod:`~drifa_edge.drift.report`: report.json, report.md, reliability diagrams.
"""

from drifa_edge.drift.check import CheckConfig, check_drift, check_drift_repeated, run_check
from drifa_edge.drift.gate import Criterion, DriftReport, TaskDrift, evaluate_drift
from drifa_edge.drift.policy import DriftPolicy, load_policy
from drifa_edge.metrics.temperature import fit_temperature

__all__ = [
    "CheckConfig",
    "check_drift",
    "check_drift_repeated",
    "Criterion",
    "DriftPolicy",
    "DriftReport",
    "TaskDrift",
    "evaluate_drift",
    "fit_temperature",
    "load_policy",
    "run_check",
]
