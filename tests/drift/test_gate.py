"""The drift gate: identical candidates pass, damaged ones fail, changed cases are listed.

Two levels: MC samples from a parametric stand-in (numpy, fast, every criterion
steered on purpose) and real tiny DRIFA-Nets through the torch runtime
(perturbed weights, a wrong temperature). The noise model's own error rates are
in test_noise.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from drifa_edge.artifact.card import ReferralRule, default_card
from drifa_edge.drift.gate import evaluate_drift
from drifa_edge.drift.policy import DriftPolicy, load_policy
from drifa_edge.drift.report import report_json
from drifa_edge.model.config import ModelConfig, TaskSpec

CFG = ModelConfig(
    tasks=(TaskSpec("derm", ("a", "b", "c")), TaskSpec("blood", ("w", "x", "y", "z"))), image_size=32
)
FAST = DriftPolicy(alpha=0.05, permutations=399)  # Holm's smallest level 0.05/16 > 1/400
N = 600  # enough cases that two noise draws give near-equal Spearman / referral numbers


class Stand_in:
    """Per-case base logits plus heteroscedastic MC noise: a model whose MI ranking is real."""

    def __init__(self, classes: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.base = rng.normal(size=(N, classes)) * 2.0
        self.spread = 0.2 + 1.5 * rng.random(N)[:, None, None]  # some cases are far more uncertain
        p = _softmax(self.base)
        self.labels = np.array([rng.choice(classes, p=row) for row in p])

    def samples(self, seed: int, t: int = 30, temperature: float = 1.0, shift: np.ndarray | None = None):
        rng = np.random.default_rng(seed)
        z = self.base[:, None, :] + self.spread * rng.normal(size=(N, t, self.base.shape[1]))
        if shift is not None:
            z = z + shift[:, None, :]
        return _softmax(z / temperature)


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def models():
    return {"derm": Stand_in(3, 1), "blood": Stand_in(4, 2)}


def _card(threshold: float = 0.12):
    return default_card(CFG, referral={t: ReferralRule(threshold=threshold) for t in CFG.task_names})


def _run(models, cand_seed=0, temperature=1.0, shift_scale=0.0, cand_threshold=0.12, policy=None):
    ref = {t: m.samples(0) for t, m in models.items()}
    rng = np.random.default_rng(42)
    cand = {
        t: m.samples(cand_seed, temperature=temperature, shift=shift_scale * rng.normal(size=m.base.shape))
        for t, m in models.items()
    }
    labels = {t: m.labels for t, m in models.items()}
    policy = policy or FAST
    return evaluate_drift(ref, cand, labels, _card(), _card(cand_threshold), policy)


def _failed(report) -> set[str]:
    return {c.name for c in report.failures}


def test_identical_candidate_with_shared_draws_passes(models):
    report = _run(models, cand_seed=0)
    assert report.passed, _failed(report)
    for t in report.tasks.values():
        assert t.pair["mean_kl"] == 0.0 and t.pair["spearman_mi"] == pytest.approx(1.0)
        assert t.noise["kl"] == 0.0  # shared masks: swapping identical draws changes nothing
        assert all(v == 0.0 for k, v in t.deltas.items() if v is not None and k != "referral_threshold")
        assert t.changed == [] and all(c.p_value == 1.0 for c in t.criteria)


def test_identical_candidate_with_independent_draws_passes(models):
    """A runtime that cannot share masks with the reference: MC noise must not read as drift."""
    report = _run(models, cand_seed=7)
    assert report.passed, _failed(report)
    for t in report.tasks.values():
        kl = next(c for c in t.criteria if c.name == "kl_ratio")
        assert 0.5 < kl.value < 1.5
        assert t.noise["kl"] > 0  # the null is real MC noise
        # MC noise alone flips borderline cases; the report lists them and says how many to expect
        assert 0 < len(t.changed) < 3 * t.changed_by_noise


def test_shifted_logits_fail(models):
    report = _run(models, shift_scale=0.7)
    assert not report.passed
    assert "kl_ratio" in _failed(report)


def test_wrong_temperature_fails_on_calibration(models):
    report = _run(models, temperature=3.0)
    assert {"kl_ratio", "ece_delta"} <= _failed(report)
    derm = report.tasks["derm"]
    assert derm.candidate["ece"] > derm.reference["ece"] + 0.05
    assert derm.candidate["accuracy"] == pytest.approx(derm.reference["accuracy"], abs=0.02)


def test_referral_threshold_fitted_for_fp32_but_not_the_candidate_fails(models):
    """An INT8 build at the FP32 threshold refers a different share of cases."""
    report = _run(models, cand_threshold=0.05)
    assert "referral_rate_diff" in _failed(report) and "referral_agreement" in _failed(report)
    assert report.tasks["derm"].pair["referral_rate_cand"] > report.tasks["derm"].pair["referral_rate_ref"]


def test_strict_profile_is_equivalence(models):
    """A small accuracy drop: the default (material) tolerates it, equivalence cannot show it is
    within one point on 600 cases with this much MC noise, and says how many cases it needs."""
    default = _run(models, shift_scale=0.25)
    strict = _run(models, shift_scale=0.25, policy=load_policy("strict-clinical"))
    loose = next(c for c in default.tasks["derm"].criteria if c.name == "accuracy_delta")
    tight = next(c for c in strict.tasks["derm"].criteria if c.name == "accuracy_delta")
    assert loose.value == tight.value and -0.03 < loose.value < 0
    assert loose.passed and not tight.passed
    assert tight.shift_high > tight.margin and tight.cases_needed > N
    worst = max(c.cases_needed for c in strict.tasks["derm"].criteria)
    assert any("'derm'" in w and "accuracy_delta" in w and str(worst) in w for w in strict.warnings)


def test_changed_cases_are_the_ones_whose_class_or_referral_differs(models):
    report = _run(models, shift_scale=0.7)
    derm = report.tasks["derm"]
    ref = models["derm"].samples(0).mean(axis=1)
    rng = np.random.default_rng(42)
    cand = models["derm"].samples(0, shift=0.7 * rng.normal(size=models["derm"].base.shape)).mean(axis=1)
    flipped = set(np.flatnonzero(ref.argmax(1) != cand.argmax(1)).tolist())
    rows = {row["row"] for row in derm.changed}
    assert flipped and flipped <= rows  # every class change is listed ...
    for row in derm.changed:  # ... and every listed row changed class or referral
        if row["row"] not in flipped:
            assert row["reference_referred"] != row["candidate_referred"]
        else:
            assert row["reference_class"] != row["candidate_class"]


def test_unscored_rows_are_left_out(models):
    ref = {t: m.samples(0) for t, m in models.items()}
    cand = {t: m.samples(3) for t, m in models.items()}
    labels = {t: m.labels.copy() for t, m in models.items()}
    base = evaluate_drift(ref, cand, labels, _card(), _card(), FAST)
    # repeat 50 rows as unscored padding, with a wildly different candidate on them
    pad = {t: np.concatenate([v, v[:50]]) for t, v in ref.items()}
    pad_cand = {t: np.concatenate([v, v[:50, :, ::-1]]) for t, v in cand.items()}
    pad_labels = {t: np.concatenate([y, -np.ones(50, dtype=int)]) for t, y in labels.items()}
    padded = evaluate_drift(pad, pad_cand, pad_labels, _card(), _card(), FAST)
    assert padded.passed and padded.tasks["derm"].cases == N
    assert padded.tasks["derm"].pair == base.tasks["derm"].pair
    assert [c.p_value for c in padded.criteria] == [c.p_value for c in base.criteria]


def test_report_is_strict_json(models):
    report = _run(models, temperature=3.0)
    data = json.loads(report_json(report))
    assert data["verdict"] == "fail" and "derm: ece_delta" in data["failures"]
    for c in data["tasks"]["derm"]["criteria"]:
        assert c["shift_low"] <= c["shift"] <= c["shift_high"], c["name"]
        assert 0 < c["p_value"] <= c["p_adjusted"] <= 1, c["name"]


# ---------------------------------------------------------------- real tiny networks, torch runtime


def _check(artifacts, candidate, **kwargs):
    from drifa_edge.drift.check import check_arrays, open_artifact
    from drifa_edge.runtimes.base import RuntimeOptions

    ref = open_artifact(artifacts.reference, "torch", RuntimeOptions())
    cand = open_artifact(candidate, "auto", RuntimeOptions())
    return check_arrays(ref, cand, artifacts.test, kwargs.pop("policy", DriftPolicy()), samples=10, **kwargs)


def test_torch_identical_candidate_passes(artifacts):
    report = _check(artifacts, artifacts.identical, val=artifacts.val)
    assert report.passed, _failed(report)
    assert report.meta["shared_masks"] is True
    for t in report.tasks.values():
        assert t.pair["mean_kl"] == 0.0 and t.changed == []
        assert t.reference["accuracy"] > 0.5  # the fixture model learned something
    # thresholds the cards lacked were fitted on validation data
    assert {v["on"] for v in report.meta["thresholds_fitted"].values()} == {"val"}


def test_torch_perturbed_weights_fail(artifacts):
    report = _check(artifacts, artifacts.perturbed, val=artifacts.val)
    assert not report.passed


def test_torch_wrong_temperature_fails_and_recalibration_repairs_ece(artifacts):
    report = _check(artifacts, artifacts.hot, val=artifacts.val)
    assert not report.passed
    assert "ece_delta" in _failed(report)
    fixed = _check(artifacts, artifacts.hot, val=artifacts.val, recalibrate=True)
    for task, r in fixed.meta["recalibration"].items():
        assert r["temperature_before"] == 5.0 and r["temperature_after"] < 2.5, task
        assert r["ece_after"] < r["ece_before"]
    assert fixed.meta["candidate_calibration"]["temperature"]["derm"] < 2.5


def test_mc_noise_is_not_read_as_drift_on_few_cases(models):
    """80 cases, a candidate identical to the reference but with its own dropout draws
    (what an in-graph RNG runtime gives): several of these seeds land beyond a point
    threshold (null median -/+ margin) by MC noise alone; judged against the null, none fails."""
    n = 80
    ref = {t: m.samples(0)[:n] for t, m in models.items()}
    labels = {t: m.labels[:n] for t, m in models.items()}
    point_failures = 0
    for seed in range(1, 11):
        cand = {t: m.samples(seed)[:n] for t, m in models.items()}
        report = evaluate_drift(ref, cand, labels, _card(), _card(), FAST)
        assert report.passed, (seed, _failed(report))
        point_failures += any(c.shift > c.margin for c in report.criteria)
    assert point_failures >= 3  # the situation the significance rule exists for


def test_damage_is_caught_on_few_cases(models):
    n = 80
    rng = np.random.default_rng(42)
    ref = {t: m.samples(0)[:n] for t, m in models.items()}
    hot = {t: m.samples(5, temperature=3.0)[:n] for t, m in models.items()}
    shifted = {t: m.samples(5, shift=0.7 * rng.normal(size=m.base.shape))[:n] for t, m in models.items()}
    labels = {t: m.labels[:n] for t, m in models.items()}
    assert not evaluate_drift(ref, hot, labels, _card(), _card(), FAST).passed
    assert not evaluate_drift(ref, shifted, labels, _card(), _card(), FAST).passed
