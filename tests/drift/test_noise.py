"""The noise model (permutation of MC draws): its statistics against independent
computations, its false-alarm rate on synthetic MC samples with a known null, its
power on a known shift, and the sample size it asks for."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from drifa_edge import metrics as M
from drifa_edge.drift.criteria import criterion_tests, judge
from drifa_edge.drift.noise import _swap_batches, permutation_null
from drifa_edge.drift.policy import DriftPolicy
from drifa_edge.errors import BadInputError


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class Model:
    """Per-case base logits and heteroscedastic MC noise; labels drawn from the model itself."""

    def __init__(self, n: int, classes: int = 4, seed: int = 0, noise: float = 1.0) -> None:
        rng = np.random.default_rng(seed)
        self.base = rng.normal(size=(n, classes)) * 2.0
        self.spread = noise * (0.2 + rng.random(n))[:, None, None]
        self.labels = np.array([rng.choice(classes, p=p) for p in _softmax(self.base)])

    def logits(self, seed: int, draws: int = 10) -> np.ndarray:
        rng = np.random.default_rng(seed)
        n, c = self.base.shape
        return self.base[:, None, :] + self.spread * rng.normal(size=(n, draws, c))

    def run(self, seed: int, draws: int = 10, temperature: float = 1.0) -> np.ndarray:
        return _softmax(self.logits(seed, draws) / temperature)


def test_observed_statistics_match_the_metrics_module():
    m = Model(150, seed=1)
    ref, cand = m.run(1), m.run(2, temperature=1.3)
    nd = permutation_null(ref, cand, m.labels, 0.1, 0.15, permutations=99)
    pair = M.pair_metrics(ref, cand, 0.1, 0.15)
    r, c = M.task_metrics(ref, m.labels, 0.1), M.task_metrics(cand, m.labels, 0.15)
    assert nd.observed["kl"] == pytest.approx(pair["mean_kl"], rel=1e-9)
    for key in ("spearman_mi", "spearman_entropy", "referral_agreement", "referral_rate_diff"):
        assert nd.observed[key] == pytest.approx(pair[key], abs=1e-12), key
    for key in ("accuracy", "macro_f1", "ece"):
        assert nd.observed[f"{key}_delta"] == pytest.approx(c[key] - r[key], abs=1e-12), key


def test_null_values_are_the_statistics_of_explicitly_swapped_runs():
    """The matmul shortcut against building each swapped pair of runs by hand."""
    m = Model(60, seed=2)
    ref, cand = m.run(1, draws=8), m.run(2, draws=8, temperature=1.2)
    nd = permutation_null(ref, cand, m.labels, 0.1, 0.3, permutations=5, seed=11)
    swaps = next(_swap_batches(np.random.default_rng(11), 5, 60, 8))  # the same masks (cases, rows, draws)
    for row in range(5):
        s = swaps[:, row, :, None].astype(bool)
        a, b = np.where(s, cand, ref), np.where(s, ref, cand)
        pair = M.pair_metrics(a, b, 0.1, 0.1)  # the null refers both sides at the reference's threshold
        assert nd.null["kl"][row] == pytest.approx(pair["mean_kl"], rel=1e-5)
        assert nd.null["referral_agreement"][row] == pytest.approx(pair["referral_agreement"])
        assert nd.null["spearman_mi"][row] == pytest.approx(pair["spearman_mi"], abs=1e-6)
        acc = M.accuracy(m.labels, b.mean(1).argmax(1)) - M.accuracy(m.labels, a.mean(1).argmax(1))
        assert nd.null["accuracy_delta"][row] == pytest.approx(acc)


def test_shape_mismatch_is_refused():
    m = Model(20)
    with pytest.raises(BadInputError, match="same --samples"):
        permutation_null(m.run(1, draws=10), m.run(2, draws=8), m.labels, 0.1, 0.1)


def _false_alarms(pairs, labels, policy) -> tuple[float, dict[str, float]]:
    """Share of null draws the gate fails, and per criterion the share with raw p <= alpha."""
    failed, small_p = 0, {}
    for k, (ref, cand) in enumerate(pairs):
        nd = permutation_null(ref, cand, labels, 0.1, 0.1, permutations=policy.permutations, seed=k)
        judged = judge(criterion_tests("t", nd, policy), policy)
        failed += any(not c.passed for c in judged)
        for c in judged:
            small_p[c.name] = small_p.get(c.name, 0) + (c.p_value <= policy.alpha)
    return failed / len(pairs), {k: v / len(pairs) for k, v in small_p.items()}


@pytest.mark.parametrize("masks", ["independent", "shared"])
def test_false_alarm_rate_is_at_most_alpha_under_a_known_null(masks):
    """200 reference/candidate pairs of ONE model: the Holm-corrected difference test fails at
    most alpha of them, and every criterion's raw p-value is <= alpha at most alpha of the time.
    ``shared``: both runs see the same masks plus independent numerical noise (torch vs torch)."""
    m = Model(80, seed=3)
    draws = 200
    if masks == "independent":
        pairs = [(m.run(2 * k), m.run(2 * k + 1)) for k in range(draws)]
    else:
        rng = np.random.default_rng(9)
        pairs = []
        for k in range(draws):
            z = m.logits(k)
            pairs.append(tuple(_softmax(z + 0.05 * rng.normal(size=z.shape)) for _ in range(2)))
    policy = DriftPolicy(decision="difference", alpha=0.2, permutations=99)  # Holm's 0.2/8 > 1/100
    rate, per_criterion = _false_alarms(pairs, m.labels, policy)
    tolerance = 3 * np.sqrt(0.2 * 0.8 / draws)  # 3 binomial sd of a rate of 0.2 over 200 draws
    assert rate <= 0.2 + tolerance
    for name, share in per_criterion.items():
        assert share <= 0.2 + tolerance, (name, share)
    assert rate > 0.0 or masks == "shared"  # the test is not simply blind


def test_power_on_a_known_shift():
    """A candidate with every logit divided by 1.5 (over-smoothed): the default policy fails it
    in at least 80 % of 20 independent draws on 300 cases, mostly on KL and ECE."""
    m = Model(300, seed=4, noise=0.7)
    policy = DriftPolicy(alpha=0.05, permutations=399)
    failed, names = 0, set()
    for k in range(20):
        nd = permutation_null(m.run(2 * k), m.run(2 * k + 1, temperature=1.5), m.labels, 0.1, 0.1,
                              permutations=399, seed=k)  # fmt: skip
        judged = judge(criterion_tests("t", nd, policy), policy)
        failed += any(not c.passed for c in judged)
        names |= {c.name for c in judged if not c.passed}
    assert failed >= 16 and "kl_ratio" in names


def test_cases_needed_follows_the_square_root_law():
    """The number of cases the gate asks for, measured at 100 cases, is about what a run at that
    size needs again (the null's spread shrinks as 1/sqrt(N))."""
    policy = DriftPolicy(alpha=0.05, permutations=399)

    def needed(n: int) -> int:
        m = Model(n, seed=5)
        nd = permutation_null(m.run(1), m.run(2), m.labels, 0.1, 0.1, permutations=399, seed=1)
        return next(c for c in judge(criterion_tests("t", nd, policy), policy) if c.name == "accuracy_delta")

    small = needed(100)
    assert small.cases_needed > 100 and small.detectable_shift > small.margin  # too few: flagged
    big = needed(small.cases_needed)
    assert 0.6 < big.cases_needed / small.cases_needed < 1.6
    assert big.detectable_shift == pytest.approx(big.margin, rel=0.3)


def test_equivalence_family_is_not_corrected():
    """Equivalence is an intersection-union test: each criterion at alpha, Holm not applied."""
    m = Model(100, seed=6)
    nd = permutation_null(m.run(1), m.run(2), m.labels, 0.1, 0.1, permutations=199)
    tests = criterion_tests("t", nd, DriftPolicy())
    strict = dataclasses.replace(DriftPolicy(), decision="equivalence", alpha=0.05)
    for c in judge(tests, strict):
        assert c.passed == (c.shift_high <= c.margin)
