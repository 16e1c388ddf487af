"""The adaptive-T stopping rule (drifa_edge.metrics.sequential) against independent
computations: scipy's distributions, per-case sums, and simulations with known draw
distributions (logistic-normal, see sequential_helpers)."""

from __future__ import annotations

import numpy as np
import pytest
from sequential_helpers import logistic_normal, mutual_information, simulate, truth

from drifa_edge.errors import BadInputError, ConfigError
from drifa_edge.inference.adaptive import AdaptiveConfig
from drifa_edge.metrics import sequential as S
from drifa_edge.metrics.sequential import Referral
from drifa_edge.metrics.uncertainty import summarize

# ---------------------------------------------------------------- the distributions


@pytest.mark.parametrize("df", [1, 2, 3, 4, 9, 29, 149])
def test_t_sf_matches_scipy(df):
    stats = pytest.importorskip("scipy.stats")
    x = np.array([-np.inf, -4.0, -0.5, 0.0, 0.7, 2.5, 12.0, np.inf])
    np.testing.assert_allclose(S.t_sf(x, df), stats.t.sf(x, df), atol=1e-12)


@pytest.mark.parametrize("df", [1.0, 2.5, 8.0, 30.0, 200.0])
def test_chi2_cdf_is_wilson_hilferty_close_to_scipy(df):
    stats = pytest.importorskip("scipy.stats")
    x = np.linspace(0.0, 4 * df, 80)
    # Wilson-Hilferty: <= 0.016 below 3 degrees of freedom, < 0.006 from 8 on (measured with scipy)
    tolerance = 0.02 if df < 3 else 0.006
    assert np.abs(S.chi2_cdf(x, np.full_like(x, df)) - stats.chi2.cdf(x, df)).max() < tolerance


# ---------------------------------------------------------------- estimates


def test_jackknife_removes_the_low_bias_of_plugin_mutual_information():
    """At n = 5 draws the plug-in MI is ~20 % low; the jackknife's mean is within 5 % of the
    MI of the draw distribution (from 400k draws, an independent computation)."""
    rng = np.random.default_rng(0)
    _, mi = truth(rng, [1.0, 0.0, 0.0], 1.0)
    draws = logistic_normal(rng, [1.0, 0.0, 0.0], 1.0, (20_000, 5))
    plugin = S.plugin_score(draws, "mutual_information")
    estimate, se = S.jackknife_score(draws, "mutual_information")
    np.testing.assert_allclose(plugin, mutual_information(draws), rtol=1e-9)
    assert plugin.mean() < 0.85 * mi
    assert abs(estimate.mean() - mi) < 0.05 * mi
    # the jackknife standard error tracks the spread of the plug-in over repeated samples
    assert 0.5 < np.median(se) / plugin.std() < 2.0


def test_effective_dimensions_counts_the_directions_the_draws_spread_in():
    rng = np.random.default_rng(1)
    one = logistic_normal(rng, [0.0, 0.0, -50.0, -50.0], 1.0, (50, 200))  # two live classes: one direction
    many = logistic_normal(rng, [0.0, 0.0, 0.0, 0.0], 1.0, (50, 200))  # four symmetric classes: three
    assert np.all(S.effective_dimensions(one) < 1.05)
    assert np.all(S.effective_dimensions(many) > 2.5)
    same = np.repeat(np.array([[[0.2, 0.8]]]), 6, axis=1)
    assert S.effective_dimensions(same)[0] == 1.0


def test_precision_rule_is_the_standard_error_of_every_class():
    rng = np.random.default_rng(2)
    draws = logistic_normal(rng, [1.0, 0.0, 0.0], 0.5, (40, 12))
    se = draws.std(axis=1, ddof=1) / np.sqrt(12)
    tolerance = float(np.median(se.max(axis=1)))
    np.testing.assert_array_equal(S.precision_settled(draws, tolerance), se.max(axis=1) <= tolerance)


def test_summarize_used_equals_summarize_of_each_cases_first_draws():
    rng = np.random.default_rng(3)
    draws = logistic_normal(rng, [1.0, 0.0, -1.0], 1.0, (6, 30))
    used = np.array([1, 4, 7, 30, 13, 2])
    s = summarize(draws, used)
    for i, n in enumerate(used):
        one = summarize(draws[i : i + 1, :n])
        for key in ("mean", "std", "mutual_information", "predictive_entropy", "expected_entropy"):
            np.testing.assert_allclose(s[key][i], one[key][0], atol=1e-12, err_msg=key)
    with pytest.raises(BadInputError, match="used must be"):
        summarize(draws, np.array([0, 1, 1, 1, 1, 1]))


# ---------------------------------------------------------------- the rule in simulation


def _population(rng, cases: int, classes: int):
    """Cases with random logit means and spreads, two independent 30-draw runs each, and
    the referral threshold fitted like a card's: the 90th percentile of MI at T = 30."""
    mu = rng.normal(0.0, 2.0, (cases, classes))
    sigma = rng.uniform(0.3, 1.5, cases)
    z = mu[:, None, :] + sigma[:, None, None] * rng.standard_normal((cases, 60, classes))
    p = np.exp(z - z.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    first, second = p[:, :30], p[:, 30:]
    return first, second, float(np.quantile(mutual_information(first), 0.9))


def _answers(draws, threshold):
    return draws.mean(axis=1).argmax(axis=1), mutual_information(draws) > threshold


def _differs(pred_a, ref_a, pred_b, ref_b):
    """Two answers differ: another referral, or another class of a case not referred."""
    return (ref_a != ref_b) | ((pred_a != pred_b) & ~ref_b)


def test_early_stops_change_no_more_answers_than_the_stated_rate():
    """Population error of early stops (against the same draws' T_max answer) <= error_rate,
    at well under half the rows of T = 30; a second T = 30 run changes far more answers."""
    rng = np.random.default_rng(5)
    first, second, threshold = _population(rng, 4000, 4)
    cfg = AdaptiveConfig(error_rate=0.05)
    used, pred, ref, early = simulate(first, Referral("mutual_information", threshold), cfg)
    full_pred, full_ref = _answers(first, threshold)
    errors = early & _differs(pred, ref, full_pred, full_ref)
    sd = np.sqrt(0.05 * 0.95 / errors.size)
    assert errors.mean() <= 0.05 + 2 * sd
    assert used.mean() < 15  # the rule does stop: < half of T_max on average
    other_pred, other_ref = _answers(second, threshold)
    assert _differs(other_pred, other_ref, full_pred, full_ref).mean() > 3 * errors.mean()


def test_the_simulation_catches_a_lax_rule():
    """The same population and check fail a rule allowed a 90 % chance of a change."""
    rng = np.random.default_rng(5)
    first, _, threshold = _population(rng, 4000, 4)
    used, pred, ref, early = simulate(
        first, Referral("mutual_information", threshold), AdaptiveConfig(error_rate=0.9)
    )
    full_pred, full_ref = _answers(first, threshold)
    assert (early & _differs(pred, ref, full_pred, full_ref)).mean() > 0.1


def test_mutual_information_bias_does_not_stop_the_draws_early(monkeypatch):
    """A case whose MI is above the threshold at T = 30 but below it, on average, at T_min:
    the plug-in at 4 draws says "keep" for most runs. The rule keeps drawing; the same rule
    fed the biased plug-in instead of the jackknife estimate stops "keep" far more often."""
    rng = np.random.default_rng(6)
    draws = logistic_normal(rng, [2.0] + [0.0] * 7, 1.0, (4000, 30))  # 8 classes
    at_min, at_max = mutual_information(draws[:, :4]), mutual_information(draws)
    threshold = 0.258
    assert at_min.mean() < 0.9 * threshold < threshold < at_max.mean()  # the premise: biased low
    assert (at_max > threshold).mean() > 0.85  # T = 30 refers this case
    referral = Referral("mutual_information", threshold)

    def wrong_keeps():
        used, _, ref, early = simulate(draws, referral, AdaptiveConfig(error_rate=0.05))
        return ((used == 4) & ~ref).mean(), (early & ~ref & (at_max > threshold)).mean()

    at_four, wrong = wrong_keeps()
    assert at_four <= 0.04 and wrong <= 0.08
    original = S.jackknife_score
    monkeypatch.setattr(S, "jackknife_score", lambda s, m: (S.plugin_score(s, m), original(s, m)[1]))
    naive_at_four, naive_wrong = wrong_keeps()
    assert naive_at_four > 1.5 * at_four and naive_wrong > 1.4 * wrong


def test_a_referred_task_does_not_wait_for_its_class():
    """Two classes tied (the class cannot settle), MI far above the threshold: settled."""
    rng = np.random.default_rng(7)
    draws = logistic_normal(rng, [0.0, 0.0], 3.0, (200, 10))
    unsettled = S.class_change(draws, 30) > 0.05
    assert unsettled.mean() > 0.7
    high = Referral("mutual_information", 0.01)
    assert S.settled({"t": draws}, {"t": high}, max_samples=30).all()
    no_threshold = S.settled({"t": draws}, {}, max_samples=30)
    np.testing.assert_array_equal(no_threshold, ~unsettled)  # class alone decides


def test_a_clear_case_stops_at_the_first_look_and_a_tied_one_does_not():
    rng = np.random.default_rng(8)
    clear = logistic_normal(rng, [6.0, 0.0, 0.0], 0.3, (100, 4))
    tied = logistic_normal(rng, [0.0, 0.0, 0.0], 0.3, (100, 4))
    keep = {"t": Referral("mutual_information", 0.5)}
    assert S.settled({"t": clear}, keep, max_samples=30).all()
    # a tie stops only where four draws happen to lean one way: about the error rate
    assert S.settled({"t": tied}, keep, max_samples=30).mean() <= 0.1
    assert np.all(S.change_probability({"t": clear}, keep, max_samples=4) == 0.0)  # nothing left to draw


def test_bad_rule_options_are_refused_with_the_fix():
    draws = np.full((1, 4, 2), 0.5)
    with pytest.raises(ConfigError, match="decision"):
        S.settled({"t": draws}, {}, max_samples=30, rule="decisoin")
    with pytest.raises(ConfigError, match=r"\(0, 1\)"):
        S.settled({"t": draws}, {}, max_samples=30, error_rate=1.5)
    with pytest.raises(BadInputError, match="draws >= 2"):
        S.class_change(np.full((1, 1, 2), 0.5), 30)
    with pytest.raises(ConfigError, match="unknown referral metric"):
        S.plugin_score(draws, "entropyy")
    for bad in ({"min_samples": 1}, {"block": 0}, {"error_rate": 0.0}, {"rule": "fast"}, {"se_tolerance": 0}):
        with pytest.raises(ConfigError):
            AdaptiveConfig(**bad)
    with pytest.raises(ConfigError, match="below the adaptive T_min"):
        AdaptiveConfig(min_samples=8).looks(5)
    assert AdaptiveConfig(min_samples=4, block=3).looks(30) == (4, 7, 10, 13, 16, 19, 22, 25, 28, 30)
