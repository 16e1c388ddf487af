"""The pass/fail criteria of the drift gate, each judged on paired per-case data.

Every criterion compares a candidate number with what the reference already
does: the noise floor (the reference against itself with other draws) for the
uncertainty numbers, the reference's own value for accuracy, macro-F1 and ECE.
The comparison is a paired bootstrap over cases (one interval per criterion), or
the Wilcoxon signed-rank test for the per-case KL. Two policies of judging
(``DriftPolicy.delta_test``):

- ``significant``: fail when the candidate is worse than the tolerance AND the
  interval of (candidate - comparison) excludes 0, i.e. the gap is both material
  and more than case sampling or MC noise explains;
- ``noninferiority``: fail unless the whole interval lies within the tolerance
  (the candidate must show it is not worse; needs many cases or shared masks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from drifa_edge import metrics as M
from drifa_edge.drift.policy import DriftPolicy
from drifa_edge.drift.stats import BootstrapInterval, paired_bootstrap, wilcoxon_signed_rank


@dataclass(frozen=True)
class Criterion:
    """One pass/fail line of the gate."""

    task: str
    name: str
    value: float | None  # the candidate's number
    threshold: float | None  # the limit it was held to (None: not applicable)
    passed: bool
    noise: float | None = None  # the same number on the noise floor (or the reference's delta)
    rule: str = ""  # how value and threshold compare, in words
    detail: str = ""
    interval: BootstrapInterval | None = None  # of (candidate - comparison), where bootstrapped
    # passed only because the interval includes 0: the point estimate is beyond the threshold
    not_significant: bool = False


@dataclass(frozen=True)
class Side:
    """Per-case quantities of one run (reference, reference again, candidate)."""

    probs: np.ndarray  # (N, C) MC mean
    predicted: np.ndarray
    confidence: np.ndarray
    correct: np.ndarray  # float 0/1
    mutual_information: np.ndarray
    predictive_entropy: np.ndarray
    referred: np.ndarray  # bool

    @classmethod
    def of(cls, samples: np.ndarray, labels: np.ndarray, threshold: float, metric: str) -> Side:
        from drifa_edge.metrics.uncertainty import refer, summarize

        s = summarize(samples)
        return cls(
            probs=s["mean"],
            predicted=s["predicted"],
            confidence=s["confidence"],
            correct=(s["predicted"] == labels).astype(np.float64),
            mutual_information=s["mutual_information"],
            predictive_entropy=s["predictive_entropy"],
            referred=refer(s[metric], threshold),
        )


def judge(ci: BootstrapInterval, tolerance: float, higher_is_better: bool, test: str) -> tuple[bool, str]:
    """Pass/fail of an interval of (candidate - comparison) against ``tolerance``."""
    sign = 1.0 if higher_is_better else -1.0
    worse_point = -sign * ci.estimate  # > 0: the candidate is worse
    worst_bound = -sign * (ci.low if higher_is_better else ci.high)
    best_bound = -sign * (ci.high if higher_is_better else ci.low)
    if test == "significant":
        return not (
            worse_point > tolerance and best_bound > 0
        ), "fail if beyond the threshold and the CI excludes 0"
    return worst_bound <= tolerance, "fail unless the whole CI is within the threshold"


def beyond_tolerance(ci: BootstrapInterval, tolerance: float, higher_is_better: bool) -> bool:
    """Whether the point estimate of (candidate - comparison) is worse than ``tolerance``; with a
    pass from :func:`judge` this is a pass only because the interval includes 0 (n.s.)."""
    sign = 1.0 if higher_is_better else -1.0
    return -sign * ci.estimate > tolerance


def _ci_text(ci: BootstrapInterval, what: str) -> str:
    return f"{what} {ci.estimate:+.4f}, {ci.level:.0%} CI [{ci.low:+.4f}, {ci.high:+.4f}]"


def _centred_ranks(a: np.ndarray) -> np.ndarray:
    ranks = M.rankdata_rows(a)
    return ranks - ranks.mean(axis=1, keepdims=True)


def _rank_corr_rows(ra: np.ndarray, rb: np.ndarray) -> np.ndarray:
    """Spearman of each row pair of centred ranks (rows, N); a row whose values are all tied gives 0."""
    denom = np.sqrt((ra * ra).sum(axis=1) * (rb * rb).sum(axis=1))
    return np.divide((ra * rb).sum(axis=1), denom, out=np.zeros(len(ra)), where=denom > 0)


class Bootstrap:
    """Paired bootstrap intervals over the cases of one task, with the policy's settings."""

    def __init__(self, cases: int, policy: DriftPolicy, seed: int) -> None:
        self.cases, self.policy, self.seed = cases, policy, seed
        self._count = 0

    def __call__(self, statistic: Callable[[np.ndarray], Any], vectorized: bool = False) -> BootstrapInterval:
        self._count += 1  # a different stream per criterion, the same ones every run
        level, reps = 1.0 - self.policy.alpha, self.policy.bootstrap_reps
        return paired_bootstrap(statistic, self.cases, reps, level, self.seed + self._count, vectorized)


def kl_criterion(task: str, kl_cand: np.ndarray, kl_noise: np.ndarray, policy: DriftPolicy) -> Criterion:
    """mean KL(ref||cand) <= kl_ratio_max x mean KL(ref||ref'); with ``kl_require_significance``
    a larger ratio fails only if the one-sided Wilcoxon test on the per-case
    differences KL(ref||cand) - kl_ratio_max * KL(ref||ref') rejects at ``alpha``."""
    noise_mean = float(kl_noise.mean())
    ratio = float(kl_cand.mean()) / max(noise_mean, policy.kl_noise_min)
    test = wilcoxon_signed_rank(kl_cand - policy.kl_ratio_max * kl_noise, alternative="greater")
    within = ratio <= policy.kl_ratio_max
    passed = within or (policy.kl_require_significance and test.p_value >= policy.alpha)
    rule = "mean KL(ref||cand) / mean KL(ref||ref') <= threshold"
    if policy.kl_require_significance:
        rule += f", or not significantly above it (one-sided Wilcoxon p >= {policy.alpha})"
    detail = (
        f"mean KL cand {kl_cand.mean():.3g} vs noise {noise_mean:.3g} nats; "
        f"Wilcoxon p={test.p_value:.3g} (n={test.n})"
    )
    return Criterion(task, "kl_ratio", ratio, policy.kl_ratio_max, passed, 1.0, rule, detail)


def spearman_criterion(
    task: str, name: str, ref: np.ndarray, again: np.ndarray, cand: np.ndarray, margin: float,
    policy: DriftPolicy, bootstrap: Bootstrap,
) -> Criterion:  # fmt: skip
    """Spearman(ref, cand) >= Spearman(ref, ref') - margin, of one per-case uncertainty."""
    rule = "candidate >= noise floor - margin"
    if np.ptp(ref) == 0 or np.ptp(again) == 0:
        return Criterion(
            task, name, None, None, True, None, rule, "undefined: the reference's values are constant"
        )
    noise = M.spearman(ref, again)
    if np.ptp(cand) == 0:
        return Criterion(
            task, name, None, noise - margin, False, noise, rule, "the candidate's values are constant"
        )
    value = M.spearman(ref, cand)

    def statistic(i: np.ndarray) -> np.ndarray:
        ranks = _centred_ranks(ref[i])
        return _rank_corr_rows(ranks, _centred_ranks(cand[i])) - _rank_corr_rows(
            ranks, _centred_ranks(again[i])
        )

    ci = bootstrap(statistic, vectorized=True)
    passed, how = judge(ci, margin, True, policy.delta_test)
    text = _ci_text(ci, "cand - noise")
    ns = passed and beyond_tolerance(ci, margin, True)
    return Criterion(task, name, value, noise - margin, passed, noise, f"{rule}; {how}", text, ci, ns)


def referral_criteria(
    task: str, ref: Side, again: Side, cand: Side, policy: DriftPolicy, bootstrap: Bootstrap
) -> list[Criterion]:
    """Referral agreement >= noise - margin; |rate(cand) - rate(ref)| <= noise + max."""
    agree_cand = (ref.referred == cand.referred).astype(np.float64)
    agree_noise = (ref.referred == again.referred).astype(np.float64)
    ci = bootstrap(lambda i: agree_cand[i].mean(axis=1) - agree_noise[i].mean(axis=1), vectorized=True)
    margin = policy.referral_agreement_margin
    passed, how = judge(ci, margin, True, policy.delta_test)
    noise = float(agree_noise.mean())
    agreement = Criterion(
        task, "referral_agreement", float(agree_cand.mean()), noise - margin, passed, noise,
        f"candidate >= noise floor - margin; {how}", _ci_text(ci, "cand - noise"), ci,
        passed and beyond_tolerance(ci, margin, True),
    )  # fmt: skip
    r, n, c = (s.referred.astype(np.float64) for s in (ref, again, cand))
    ci = bootstrap(
        lambda i: np.abs(c[i].mean(1) - r[i].mean(1)) - np.abs(n[i].mean(1) - r[i].mean(1)), vectorized=True
    )
    limit = policy.referral_rate_diff_max
    passed, how = judge(ci, limit, False, policy.delta_test)
    noise = float(abs(n.mean() - r.mean()))
    rate = Criterion(
        task, "referral_rate_diff", float(abs(c.mean() - r.mean())), noise + limit, passed, noise,
        f"|rate(cand) - rate(ref)| <= noise floor + max difference; {how}",
        f"rates ref {r.mean():.3f}, cand {c.mean():.3f}; " + _ci_text(ci, "cand - noise"), ci,
        passed and beyond_tolerance(ci, limit, False),
    )  # fmt: skip
    return [agreement, rate]


def delta_criteria(
    task: str,
    ref: Side,
    again: Side,
    cand: Side,
    labels: np.ndarray,
    policy: DriftPolicy,
    bootstrap: Bootstrap,
) -> list[Criterion]:
    """Accuracy, macro-F1 and ECE of the candidate against the reference's own."""
    classes, bins = ref.probs.shape[1], policy.ece_bins
    index = {id(s): M.bin_index(s.confidence, bins) for s in (ref, again, cand)}
    code = {id(s): labels * classes + s.predicted for s in (ref, again, cand)}

    def accuracy(s: Side, i: np.ndarray) -> float:
        return float(s.correct[i].mean())

    def macro_f1(s: Side, i: np.ndarray) -> float:
        cm = np.bincount(code[id(s)][i], minlength=classes**2).reshape(classes, classes)
        return M.macro_f1_from_confusion(cm)

    def ece(s: Side, i: np.ndarray) -> float:
        return M.ece_from_parts(index[id(s)][i], s.confidence[i], s.correct[i], bins)

    out = []
    everything = np.arange(labels.size)
    for name, metric, tolerance, higher_is_better in (
        ("accuracy_delta", accuracy, policy.accuracy_drop_max, True),
        ("macro_f1_delta", macro_f1, policy.macro_f1_drop_max, True),
        ("ece_delta", ece, policy.ece_rise_max, False),
    ):
        ci = bootstrap(lambda i, metric=metric: metric(cand, i) - metric(ref, i))
        passed, how = judge(ci, tolerance, higher_is_better, policy.delta_test)
        noise = metric(again, everything) - metric(ref, everything)
        threshold = -tolerance if higher_is_better else tolerance
        text = _ci_text(ci, "cand - ref")
        ns = passed and beyond_tolerance(ci, tolerance, higher_is_better)
        out.append(Criterion(task, name, ci.estimate, threshold, passed, noise, how, text, ci, ns))
    return out
