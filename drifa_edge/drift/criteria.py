"""The pass/fail criteria of the drift gate and the rule that judges them.

Each criterion is one statistic of (reference, candidate) from
:mod:`drifa_edge.drift.noise`, compared with its permutation null (what two runs
of the reference show) and with a clinical margin from the policy. Three rules
(``DriftPolicy.decision``), all at the policy's ``alpha``:

- ``material`` (default): fail a criterion when the difference test rejects
  after Holm's correction over every criterion of every task AND the estimated
  shift exceeds its margin. The significance part bounds the false-alarm rate of
  the whole gate by alpha (Holm controls the family-wise error); the margin part
  keeps a large test set from failing a shift too small to matter.
- ``difference``: the Holm-corrected difference test alone (for measurements).
- ``equivalence`` (``strict-clinical``): pass a criterion only when the upper
  one-sided (1 - alpha) bound of the shift is within its margin. The gate passes
  only if every criterion does: an intersection-union test, level alpha without
  any correction (Berger 1982, *Technometrics* 24:295-300).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from drifa_edge.drift.noise import STATISTICS, NullDistribution
from drifa_edge.drift.policy import DriftPolicy
from drifa_edge.drift.stats import (
    cases_needed,
    detectable_shift,
    holm,
    permutation_p_value,
    shift_estimate,
)

# criterion name -> (statistic of drift.noise, policy attribute of its margin)
CRITERIA: dict[str, tuple[str, str]] = {
    "kl_ratio": ("kl", "kl_ratio_max"),
    "spearman_mi": ("spearman_mi", "spearman_mi_margin"),
    "spearman_entropy": ("spearman_entropy", "spearman_entropy_margin"),
    "referral_agreement": ("referral_agreement", "referral_agreement_margin"),
    "referral_rate_diff": ("referral_rate_diff", "referral_rate_diff_max"),
    "accuracy_delta": ("accuracy_delta", "accuracy_drop_max"),
    "macro_f1_delta": ("macro_f1_delta", "macro_f1_drop_max"),
    "ece_delta": ("ece_delta", "ece_rise_max"),
}


@dataclass(frozen=True)
class Criterion:
    """One pass/fail line of the gate. ``shift``, its bounds, ``margin`` and
    ``detectable_shift`` are in badness units (> 0: worse); for ``kl_ratio`` that is
    the log of the ratio of mean KLs."""

    task: str
    name: str
    value: float | None  # the candidate's number (kl_ratio: mean KL / the null's median)
    threshold: float | None  # the limit ``value`` was held to: noise -/+ margin (kl: the ratio)
    passed: bool
    noise: float | None = None  # the null's median: what two runs of the reference show
    rule: str = ""
    detail: str = ""
    p_value: float | None = None  # one-sided permutation p of "no worse than the reference"
    p_adjusted: float | None = None  # Holm-adjusted over every criterion of every task
    shift: float | None = None
    shift_low: float | None = None  # one-sided (1 - alpha) lower bound
    shift_high: float | None = None  # one-sided (1 - alpha) upper bound
    margin: float | None = None
    spread: float | None = None  # the null's standard deviation (MC noise of the statistic)
    detectable_shift: float | None = None  # found with 80 % power (equivalence: passed with 80 %)
    cases: int = 0
    cases_needed: int = 0  # for the policy to mean anything at this MC noise (stats.cases_needed)
    # passed although the shift estimate is beyond the margin: the test did not reject
    # (not significant at this many cases), so the value sits past its limit with a pass
    not_significant: bool = False


@dataclass(frozen=True)
class CriterionTest:
    """A criterion's evidence before judging: observed, null, margin (badness units)."""

    task: str
    name: str
    value: float
    noise: float
    badness: float
    null_badness: np.ndarray
    margin: float
    cases: int


def criterion_tests(task: str, nd: NullDistribution, policy: DriftPolicy) -> list[CriterionTest]:
    """The evidence of every criterion of one task from its permutation null."""
    out = []
    for name, (stat, margin_key) in CRITERIA.items():
        observed, null = nd.observed[stat], nd.null[stat]
        median = float(np.median(null))
        if stat == "kl":  # a ratio margin: judged on log(mean KL)
            floor = policy.kl_noise_min
            badness, null_b = math.log(max(observed, floor)), np.log(np.maximum(null, floor))
            value, noise, margin = observed / max(median, floor), 1.0, math.log(policy.kl_ratio_max)
        else:
            sign = 1.0 if STATISTICS[stat] else -1.0
            badness, null_b = sign * observed, sign * null
            value, noise, margin = observed, median, float(getattr(policy, margin_key))
        out.append(CriterionTest(task, name, value, noise, badness, null_b, margin, nd.cases))
    return out


def _threshold(t: CriterionTest, policy: DriftPolicy) -> float:
    if t.name == "kl_ratio":
        return policy.kl_ratio_max
    higher_is_worse = STATISTICS[CRITERIA[t.name][0]]
    return t.noise + t.margin if higher_is_worse else t.noise - t.margin


def judge(tests: list[CriterionTest], policy: DriftPolicy) -> list[Criterion]:
    """Apply the policy's decision rule to every criterion of every task at once (Holm needs all)."""
    alpha, decision = policy.alpha, policy.decision
    p_values = [permutation_p_value(t.badness, t.null_badness) for t in tests]
    adjusted, rejected = holm(p_values, alpha)
    per_test = alpha if decision == "equivalence" else alpha / max(1, len(tests))
    out = []
    for t, p, p_adj, reject in zip(tests, p_values, adjusted, rejected, strict=True):
        est = shift_estimate(t.badness, t.null_badness, alpha)
        if decision == "equivalence":
            passed = est.high <= t.margin
            rule = f"pass only if the {1 - alpha:.0%} upper bound of the shift <= margin"
        elif decision == "material":
            passed = not (reject and est.shift > t.margin)
            rule = f"fail if Holm-adjusted p <= {alpha} and shift > margin"
        else:
            passed = not reject
            rule = f"fail if Holm-adjusted p <= {alpha}"
        detail = (
            f"shift {est.shift:+.4f} [{est.low:+.4f}, {est.high:+.4f}] vs margin {t.margin:.4f}; "
            f"p {p:.3g}, Holm {p_adj:.3g}"
        )
        out.append(
            Criterion(
                task=t.task, name=t.name, value=t.value, threshold=_threshold(t, policy), passed=passed,
                noise=t.noise, rule=rule, detail=detail, p_value=p, p_adjusted=p_adj,
                shift=est.shift, shift_low=est.low, shift_high=est.high, margin=t.margin,
                spread=est.spread, detectable_shift=detectable_shift(est.spread, t.margin, per_test, decision),
                cases=t.cases, cases_needed=cases_needed(t.cases, est.spread, t.margin, per_test),
                not_significant=passed and est.shift > t.margin,
            )
        )  # fmt: skip
    return out
