"""Sequential stopping of MC dropout (adaptive T): is a case's answer settled after n draws?

Pure numpy (no scipy: an edge install predicts with it). The engine
(:mod:`drifa_edge.inference.adaptive`) draws MC samples in blocks and asks, at each look
n = T_min, T_min + block, ..., T_max, whether drawing on to T_max could still change the
case's answer. Per task the answer is two decisions, made as a fixed-T run makes them:
the class (argmax of the MC mean) and the referral (the plug-in referral score, mutual
information by default, strictly above the card's threshold).

**The rule: the predictive probability of a change.** For each decision the rule computes
P(the decision on all T_max draws differs from the decision now | the n draws so far)
under a normal model of the MC mean with a flat prior: the posterior predictive of the
T_max mean given n draws is a Student t with n - 1 degrees of freedom, centred on the
current mean, with scale s sqrt((T_max - n) / (n T_max)) (stochastic curtailment by the
predictive probability: Spiegelhalter, Freedman & Blackburn 1986, *Monitoring clinical
trials: conditional or predictive power?*, Control. Clin. Trials 7(1); Lan, Simon &
Halperin 1982, Commun. Stat. C 1(3)). A case stops when the sum of these probabilities
over its tasks' decisions is at most ``error_rate`` (a union bound over decisions). Being
a posterior probability, it needs no correction for the number of looks: it holds at
whatever look the case stops, averaged over cases, not for every single case. Measured
(tests/metrics/test_sequential.py): on a simulated population with the threshold at the
90th percentile of MI, early stops at ``error_rate`` 0.05 disagree with the same draws'
T_max answer for ~2 % of cases, where a second independent T_max run disagrees for ~11 %;
for a case sitting exactly on the threshold an early stop disagrees up to ~15 % of the
time (a second T_max run: ~50 %).

- **class**: for each rival c of the leader l, the paired differences d_s = p_s[l] - p_s[c];
  P(change) is the sum over rivals of P(mean of d over T_max draws <= 0).
- **referral**: the score is a non-linear function of MC means and its plug-in value is
  **biased low** at small n (entropy is concave: H(mean of n draws) underestimates
  H(E p); Paninski 2003, Neural Comput. 15(6); to first order MI_n ~ MI (1 - 1/n)). A rule
  that compared the n-draw plug-in with the threshold would stop early *because* of that
  bias. Here the jackknife (Quenouille 1956; pseudo-values and their standard error: Tukey
  1958, Efron & Stein 1981, Ann. Stat. 9(3)) estimates the bias-free score and its
  standard error; the T_max plug-in is predicted as that estimate plus the bias left at
  T_max (the jackknife's bias estimate scaled by n / T_max). The score is non-negative and
  variance-like (MI ~ half the chi-square spread of the draws), so a symmetric interval is
  too short on the low side (a sample that happens to spread little has a small estimate
  *and* a small standard error): the prediction is a scaled chi-square with
  Satterthwaite's effective degrees of freedom nu = 2 mean^2 / var (Satterthwaite 1946,
  Biometrics Bull. 2(6)), capped at (n - 1) times the number of directions the draws
  actually spread in (:func:`effective_dimensions`), its CDF by Wilson & Hilferty's cube
  approximation (1931, PNAS 17(12)).
- A task whose referral is settled on "refer" does not wait for its class: the case goes
  to a human, whose reading the class does not replace.

**What it does not guarantee.** A normal/chi-square model of n draws is accurate for the
smooth spread MC dropout gives, but it is not a worst-case bound: draws that are almost
always identical yet rarely very different (a one-in-ten flip) can be missed by any rule
that looks at few draws, and have a standard error of 0. ``T_min`` bounds that risk.

**Decisions, not the uncertainty's resolution.** The rule settles the class and the referral.
A case settled after a few draws still reports an MC mean and an MI resting on those draws, so
statistics of the continuous uncertainty (the rank correlation of MI with a fixed-T run, the
KL of MC means: two criteria of the drift gate) are noisier than at T_max. ``both`` below adds
the standard-error condition for that (README: "Adaptive T" has the measured trade-off).

The alternative stop, ``precision``: every class probability's Monte Carlo standard
error sd/sqrt(n) at or below a tolerance (fixed-width sequential estimation; Chow &
Robbins 1965, Ann. Math. Stat. 36(2)).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from drifa_edge.artifact.card import REFERRAL_METRICS
from drifa_edge.errors import BadInputError, ConfigError, suggest

# decision: class and referral settled; precision: standard errors below the tolerance;
# both: the two together; either: whichever comes first
RULES = ("decision", "precision", "both", "either")
_EPS = 1e-12
_NORMAL = NormalDist()

# ------------------------------------------------------------------ Student t without scipy


def _t_abs_cdf(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with integer ``df`` (Abramowitz & Stegun 26.7.3-4)."""
    theta = math.atan(t / math.sqrt(df))
    s, c = math.sin(theta), math.cos(theta)
    if df % 2 == 1:
        total, term = 0.0, c  # c, (2/3) c^3, (2*4)/(3*5) c^5 ...
        if df > 1:
            total = term
            for k in range(3, df - 1, 2):
                term *= c * c * (k - 1) / k
                total += term
        return (2.0 / math.pi) * (theta + s * total)
    total, term = 1.0, 1.0  # 1, (1/2) c^2, (1*3)/(2*4) c^4 ...
    for k in range(2, df - 1, 2):
        term *= c * c * (k - 1) / k
        total += term
    return s * total


# ------------------------------------------------------------------ per-draw scores


def _entropy(p: np.ndarray) -> np.ndarray:
    return -(p * np.log(np.clip(p, _EPS, 1.0))).sum(axis=-1)


def _score(mean: np.ndarray, expected_entropy: np.ndarray, metric: str) -> np.ndarray:
    """A referral score from MC means (..., C) and mean per-draw entropies (...)."""
    if metric == "mutual_information":
        return np.maximum(_entropy(mean) - expected_entropy, 0.0)
    if metric == "predictive_entropy":
        return _entropy(mean)
    if metric == "expected_entropy":
        return expected_entropy
    if metric == "least_confidence":
        return 1.0 - mean.max(axis=-1)
    raise ConfigError(
        f"unknown referral metric {metric!r}; choose one of {REFERRAL_METRICS}"
        + suggest(metric, REFERRAL_METRICS)
    )


def _check_samples(samples: np.ndarray) -> np.ndarray:
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim != 3 or samples.shape[1] < 2:
        raise BadInputError(
            f"sequential tests need MC samples shaped (cases, draws >= 2, classes), got {samples.shape}"
        )
    if not np.isfinite(samples).all():
        raise BadInputError("MC samples contain NaN or Inf")
    return samples


def plugin_score(samples: np.ndarray, metric: str) -> np.ndarray:
    """The plug-in referral score of each case from its n draws (B, n, C) -> (B,): what
    :func:`drifa_edge.metrics.uncertainty.summarize` gives (biased low for entropies)."""
    samples = _check_samples(samples)
    return _score(samples.mean(axis=1), _entropy(samples).mean(axis=1), metric)


def jackknife_score(samples: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Jackknife bias-corrected referral score and its standard error, (B,) each.

    From draws (B, n, C), n >= 2: with theta the plug-in score and theta_(i) the score
    without draw i, the pseudo-values are psi_i = n theta - (n - 1) theta_(i); the estimate
    is their mean (the plug-in's O(1/n) bias removed, Quenouille 1956) and its standard
    error their sample sd / sqrt(n) (Tukey 1958)."""
    samples = _check_samples(samples)
    n = samples.shape[1]
    h = _entropy(samples)  # (B, n)
    mean, eh = samples.mean(axis=1), h.mean(axis=1)
    theta = _score(mean, eh, metric)  # (B,)
    loo_mean = (n * mean[:, None, :] - samples) / (n - 1)  # (B, n, C)
    loo_eh = (n * eh[:, None] - h) / (n - 1)
    theta_loo = _score(np.clip(loo_mean, 0.0, 1.0), loo_eh, metric)  # (B, n)
    pseudo = n * theta[:, None] - (n - 1) * theta_loo
    return pseudo.mean(axis=1), pseudo.std(axis=1, ddof=1) / math.sqrt(n)


# ------------------------------------------------------------------ predictive distributions


def t_sf(t: np.ndarray, df: int) -> np.ndarray:
    """P(T > t) for Student's t with integer ``df`` >= 1, elementwise (inf and -inf allowed)."""
    t = np.asarray(t, dtype=np.float64)
    out = np.empty_like(t)
    for index, value in np.ndenumerate(t):
        if math.isinf(value):
            out[index] = 0.0 if value > 0 else 1.0
        else:
            tail = 0.5 * (1.0 - _t_abs_cdf(abs(value), df))
            out[index] = tail if value >= 0 else 1.0 - tail
    return out


def chi2_cdf(x: np.ndarray, df: np.ndarray) -> np.ndarray:
    """P(chi-square_df <= x) for real ``df`` > 0, by Wilson & Hilferty's cube approximation."""
    x = np.maximum(np.asarray(x, dtype=np.float64), 0.0)
    df = np.asarray(df, dtype=np.float64)
    z = (np.cbrt(x / df) - (1.0 - 2.0 / (9.0 * df))) / np.sqrt(2.0 / (9.0 * df))
    return np.where(x > 0, np.vectorize(_NORMAL.cdf, otypes=[np.float64])(z), 0.0)


def effective_dimensions(samples: np.ndarray) -> np.ndarray:
    """(B,) how many independent directions the draws (B, n, C) spread in, in [1, C - 1]:
    (tr A)^2 / tr(A^2) for A the draws' covariance in the Fisher metric diag(1 / mean), the
    quadratic form MI ~ (1/2) sum_c (p_c - mean_c)^2 / mean_c is made of (Satterthwaite's
    degrees of freedom of a weighted sum of chi-squares). 1 where the draws do not spread."""
    samples = _check_samples(samples)
    mean = samples.mean(axis=1)  # (B, C)
    x = (samples - mean[:, None, :]) / np.sqrt(np.maximum(mean, _EPS))[:, None, :]  # (B, n, C)
    a = np.einsum("bnc,bnd->bcd", x, x) / (samples.shape[1] - 1)  # (B, C, C)
    trace = np.trace(a, axis1=1, axis2=2)
    frob = np.einsum("bcd,bcd->b", a, a)
    with np.errstate(divide="ignore", invalid="ignore"):
        dims = np.where(frob > 0, trace**2 / frob, 1.0)
    return np.clip(dims, 1.0, max(1, samples.shape[2] - 1))


def class_change(samples: np.ndarray, max_samples: int) -> np.ndarray:
    """(B,) predictive probability that the class of all ``max_samples`` draws differs from
    the leader of the n draws (B, n, C) so far; 0 at n = max_samples (nothing left to draw).
    Summed over the rivals (a union bound), so it can exceed 1."""
    samples = _check_samples(samples)
    cases, n, classes = samples.shape
    if classes < 2 or n >= max_samples:
        return np.zeros(cases)
    lead = samples.mean(axis=1).argmax(axis=1)  # (B,)
    top = np.take_along_axis(samples, lead[:, None, None], axis=2)  # (B, n, 1)
    d = top - samples  # (B, n, C); the leader's own column is 0 and dropped below
    mean, sd = d.mean(axis=1), d.std(axis=1, ddof=1)
    scale = sd * math.sqrt((max_samples - n) / (n * max_samples))  # predictive scale of the final mean
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(scale > 0, mean / scale, np.where(mean > 0, np.inf, -np.inf))
    t[np.arange(cases), lead] = np.inf
    return t_sf(t, n - 1).sum(axis=1)


def referral_change(samples: np.ndarray, metric: str, threshold: float, max_samples: int) -> np.ndarray:
    """(B,) predictive probability that the referral on all ``max_samples`` draws (plug-in
    score > threshold) differs from the referral on the n draws (B, n, C) so far; 0 without
    a finite threshold or at n = max_samples. See the module docstring for the model."""
    cases, n = np.shape(samples)[0], np.shape(samples)[1]
    if not math.isfinite(threshold) or n >= max_samples:
        return np.zeros(cases)
    samples = _check_samples(samples)
    estimate, se = jackknife_score(samples, metric)
    plugin = plugin_score(samples, metric)
    # the T_max plug-in: bias-free estimate plus the bias left at T_max (bias ~ 1/draws)
    centre = np.maximum(estimate + (plugin - estimate) * n / max_samples, 0.0)
    var = se**2 * (max_samples - n) / max_samples  # what the remaining draws can still move
    cap = (n - 1) * effective_dimensions(samples) * max_samples / (max_samples - n)
    with np.errstate(divide="ignore", invalid="ignore"):
        nu = np.clip(np.where(var > 0, 2.0 * centre**2 / var, cap), 1e-3, cap)
        above = np.where(centre > 0, 1.0 - chi2_cdf(nu * threshold / centre, nu), 0.0)
    referred = plugin > threshold
    return np.where(referred, 1.0 - above, above)


def precision_settled(samples: np.ndarray, tolerance: float) -> np.ndarray:
    """(B,) True where every class probability's MC standard error sd/sqrt(n) <= ``tolerance``."""
    samples = _check_samples(samples)
    se = samples.std(axis=1, ddof=1) / math.sqrt(samples.shape[1])  # (B, C)
    return (se <= tolerance).all(axis=1)


@dataclass(frozen=True)
class Referral:
    """What a task's referral decision is made on: ``metric`` strictly above ``threshold``
    (an infinite threshold: no referral decision)."""

    metric: str = "mutual_information"
    threshold: float = float("inf")


def change_probability(
    samples: Mapping[str, np.ndarray], referral: Mapping[str, Referral], max_samples: int
) -> np.ndarray:
    """(B,) the sum over tasks of the predictive probabilities that the class or the referral
    on ``max_samples`` draws differs from the one on the n draws so far (a task referred now
    counts only its referral). ``samples`` per task (B, n, C), one n for all tasks."""
    total: np.ndarray | None = None
    for task, p in samples.items():
        r = referral.get(task, Referral())
        ref = referral_change(p, r.metric, r.threshold, max_samples)
        cls = class_change(p, max_samples)
        if math.isfinite(r.threshold):
            cls = np.where(plugin_score(p, r.metric) > r.threshold, 0.0, cls)
        total = ref + cls if total is None else total + ref + cls
    if total is None:
        raise BadInputError("no task's samples were given")
    return total


def settled(
    samples: Mapping[str, np.ndarray],
    referral: Mapping[str, Referral],
    *,
    max_samples: int,
    rule: str = "decision",
    error_rate: float = 0.05,
    tolerance: float = 0.02,
) -> np.ndarray:
    """(B,) True where a case may stop under ``rule`` (:data:`RULES`): ``decision`` when
    :func:`change_probability` <= ``error_rate``; ``precision`` when every task's
    :func:`precision_settled` at ``tolerance``; ``both`` / ``either`` combine the two.
    ``samples`` per task (B, n, C); a task missing from ``referral`` has no referral decision."""
    if rule not in RULES:
        raise ConfigError(f"unknown stopping rule {rule!r}; choose one of {RULES}" + suggest(rule, RULES))
    if not 0.0 < error_rate < 1.0:
        raise ConfigError(f"error rate must be in (0, 1), got {error_rate}")
    if not samples:
        raise BadInputError("no task's samples were given")
    decision = precision = None
    if rule != "precision":
        decision = change_probability(samples, referral, max_samples) <= error_rate
    if rule != "decision":
        precision = np.logical_and.reduce([precision_settled(p, tolerance) for p in samples.values()])
    if rule == "decision":
        return decision
    if rule == "precision":
        return precision
    return decision & precision if rule == "both" else decision | precision
