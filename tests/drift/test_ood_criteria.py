"""The OOD criteria of the drift gate (issue 18): the OOD score is judged like MI.

Checked against independent computations: the whitened shortcut against the
Mahalanobis score of :mod:`drifa_edge.metrics.mahalanobis`, the null values against
runs swapped by hand and scored with scipy's Spearman; then their false-alarm rate
under a known null, their power on a known feature shift, the note when there is no
``ood.npz``, and ``check`` on real tiny DRIFA-Nets with a fitted density.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from scipy.stats import spearmanr

from drifa_edge.artifact.ood import TaskDensity
from drifa_edge.drift.criteria import criterion_tests, judge
from drifa_edge.drift.noise import OOD_STATISTICS, OodFeatures, _swap_batches, permutation_null
from drifa_edge.drift.policy import DriftPolicy
from drifa_edge.errors import BadInputError
from drifa_edge.metrics.mahalanobis import fit_class_gaussians, mahalanobis_scores, whitening

D, CLASSES = 6, 3


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class Features:
    """Per-case feature centres (some far from every class: the OOD-looking cases) plus MC
    noise per draw, and class logits read from the same centres."""

    def __init__(self, n: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.means = rng.normal(size=(CLASSES, D)) * 3.0
        self.labels = rng.integers(0, CLASSES, n)
        far = rng.random(n) < 0.15
        self.centre = self.means[self.labels] + rng.normal(size=(n, D)) * np.where(far, 3.0, 1.0)[:, None]
        self.spread = 0.3 + 0.7 * rng.random(n)[:, None, None]
        train_y = rng.integers(0, CLASSES, 400)
        classes, means, precision = fit_class_gaussians(
            self.means[train_y] + rng.normal(size=(400, D)), train_y
        )
        self.density = TaskDensity(
            space="branch", columns=(0, D), classes=classes, means=means, precision=precision,
            threshold=float(np.quantile(mahalanobis_scores(self.centre, means, precision), 0.9)),
            target_rate=0.1, fit={},
        )  # fmt: skip

    def run(self, seed: int, draws: int = 10, shift: np.ndarray | None = None):
        """(probabilities (N, T, C), embeddings (N, T, D)) of one MC run."""
        rng = np.random.default_rng(seed)
        centre = self.centre if shift is None else self.centre + shift
        emb = centre[:, None, :] + self.spread * rng.normal(size=(len(centre), draws, D))
        logits = -((emb[:, :, None, :] - self.means[None, None]) ** 2).sum(-1) / 4.0
        return _softmax(logits), emb


def _null(f: Features, ref, cand, density=None, cand_density=None, permutations=99, seed=0):
    ood = OodFeatures(ref[1], cand[1], density or f.density, cand_density or density or f.density)
    return permutation_null(
        ref[0], cand[0], f.labels, 0.1, 0.1, permutations=permutations, seed=seed, ood=ood
    )


def test_whitening_turns_the_mahalanobis_score_into_a_euclidean_distance():
    f = Features(200, seed=1)
    x = np.random.default_rng(2).normal(size=(50, D)) * 4.0
    d = f.density
    w = whitening(d.precision)
    expected = mahalanobis_scores(x, d.means, d.precision)
    euclidean = (((x @ w)[:, None, :] - (d.means @ w)[None]) ** 2).sum(-1).min(axis=1)
    assert euclidean == pytest.approx(expected, rel=1e-9, abs=1e-9)
    with pytest.raises(BadInputError, match="square"):
        whitening(np.ones((3, 4)))


def test_observed_ood_statistics_score_each_run_with_its_own_density():
    f = Features(120, seed=3)
    ref, cand = f.run(1), f.run(2)
    strict = TaskDensity(**{**f.density.__dict__, "threshold": f.density.threshold * 0.8})
    nd = _null(f, ref, cand, cand_density=strict)
    s_ref = mahalanobis_scores(ref[1].mean(axis=1), f.density.means, f.density.precision)
    s_cand = mahalanobis_scores(cand[1].mean(axis=1), strict.means, strict.precision)
    assert nd.observed["spearman_ood"] == pytest.approx(spearmanr(s_ref, s_cand).statistic, abs=1e-12)
    agree = ((s_ref > f.density.threshold) == (s_cand > strict.threshold)).mean()
    assert nd.observed["ood_agreement"] == pytest.approx(agree)


def test_ood_null_values_are_the_statistics_of_explicitly_swapped_runs():
    """The matmul over whitened features against swapping draws by hand and scoring the
    MC-mean embedding with the Mahalanobis score and scipy's Spearman."""
    f = Features(60, seed=4)
    ref, cand = f.run(1, draws=8), f.run(2, draws=8, shift=0.5)
    nd = _null(f, ref, cand, permutations=5, seed=11)
    swaps = next(_swap_batches(np.random.default_rng(11), 5, 60, 8))
    d = f.density
    for row in range(5):
        s = swaps[:, row, :, None].astype(bool)
        a, b = np.where(s, cand[1], ref[1]), np.where(s, ref[1], cand[1])
        sa = mahalanobis_scores(a.mean(axis=1), d.means, d.precision)
        sb = mahalanobis_scores(b.mean(axis=1), d.means, d.precision)
        assert nd.null["spearman_ood"][row] == pytest.approx(spearmanr(sa, sb).statistic, abs=1e-6)
        agree = ((sa > d.threshold) == (sb > d.threshold)).mean()
        assert nd.null["ood_agreement"][row] == pytest.approx(agree, abs=1e-12)


def test_ood_criteria_false_alarms_and_power():
    """Under the known null (one model, other draws) each OOD criterion's raw p is <= alpha at
    most alpha of the time (+ 3 binomial sd); a fixed feature error of ~ the MC spread per case
    fails spearman_ood in nearly every draw."""
    f = Features(150, seed=5)
    policy = DriftPolicy(decision="difference", alpha=0.2, permutations=99)
    draws, small_p = 80, {k: 0 for k in OOD_STATISTICS}
    for k in range(draws):
        nd = _null(f, f.run(2 * k), f.run(2 * k + 1), seed=k)
        for c in judge(criterion_tests("t", nd, policy), policy):
            if c.name in small_p:
                small_p[c.name] += c.p_value <= policy.alpha
    tolerance = 3 * np.sqrt(0.2 * 0.8 / draws)
    for name, count in small_p.items():
        assert count / draws <= 0.2 + tolerance, (name, count)
    assert sum(small_p.values()) > 0  # not blind
    default = DriftPolicy(alpha=0.05, permutations=399)
    rng = np.random.default_rng(7)
    shift = rng.normal(size=(150, D)) * 1.5
    failed = 0
    for k in range(10):
        nd = _null(f, f.run(100 + k), f.run(200 + k, shift=shift), permutations=399, seed=k)
        failed += any(
            c.name == "spearman_ood" and not c.passed
            for c in judge(criterion_tests("t", nd, default), default)
        )
    assert failed >= 8


def test_ood_inputs_are_checked():
    f = Features(30)
    ref, cand = f.run(1), f.run(2, draws=8)
    with pytest.raises(BadInputError, match="same shape|one shape"):
        OodFeatures(ref[1], cand[1], f.density, f.density)
    narrow = TaskDensity(**{**f.density.__dict__, "columns": (2, 2 + D)})
    with pytest.raises(BadInputError, match="columns"):
        OodFeatures(ref[1], f.run(3)[1], narrow, narrow)


def test_gate_without_ood_features_skips_the_ood_criteria_with_a_note():
    from drifa_edge.artifact.card import ReferralRule, default_card
    from drifa_edge.drift.gate import evaluate_drift
    from drifa_edge.model.config import ModelConfig, TaskSpec

    f = Features(120, seed=6)
    tasks = (TaskSpec("t", ("a", "b", "c")), TaskSpec("u", ("a", "b", "c")))
    card = default_card(
        ModelConfig(tasks=tasks, image_size=32), referral={t.name: ReferralRule(threshold=0.1) for t in tasks}
    )
    ref, cand = f.run(1), f.run(2)
    both = {"t": ref[0], "u": ref[0]}, {"t": cand[0], "u": cand[0]}, {"t": f.labels, "u": f.labels}
    policy = DriftPolicy(alpha=0.05, permutations=399)
    plain = evaluate_drift(*both, card, card, policy)
    assert not {c.name for c in plain.criteria} & {"spearman_ood", "ood_agreement"}
    assert "ood.npz" in plain.tasks["t"].ood["skipped"]
    judged = evaluate_drift(
        *both, card, card, policy, ood={"t": OodFeatures(ref[1], cand[1], f.density, f.density)}
    )
    assert {("t", "spearman_ood"), ("t", "ood_agreement")} <= {(c.task, c.name) for c in judged.criteria}
    assert not any(c.task == "u" and c.name == "spearman_ood" for c in judged.criteria)
    assert judged.passed, [c.detail for c in judged.failures]
    assert 0.0 < judged.tasks["t"].ood["reference"]["flag_rate"] < 0.5


def _with_density(artifacts, tmp_path):
    """Copies of the reference and of an identical build, with a density fitted on the
    reference's validation embeddings (branch space) in each folder's ood.npz."""
    from drifa_edge.artifact.card import read_card
    from drifa_edge.artifact.ood import write_ood
    from drifa_edge.export.ood import task_columns
    from drifa_edge.inference.engine import EngineConfig, run_member_embedding
    from drifa_edge.runtimes.base import RuntimeOptions, open_runtime

    ref, same = tmp_path / "reference", tmp_path / "identical"
    shutil.copytree(artifacts.reference, ref)
    shutil.copytree(artifacts.identical, same)
    card = read_card(ref)
    rt = open_runtime("torch", ref, RuntimeOptions())
    _, emb = run_member_embedding(rt, artifacts.val[0], EngineConfig(samples=10, seed=0))
    rt.close()
    densities = {}
    for task in card.task_names:
        columns = task_columns(card, task, "branch")
        feats = emb[:, columns[0] : columns[1]]
        classes, means, precision = fit_class_gaussians(feats, artifacts.val[2][task])
        threshold = float(np.quantile(mahalanobis_scores(feats, means, precision), 0.9))
        densities[task] = TaskDensity("branch", columns, classes, means, precision, threshold, 0.1, {})
    for folder in (ref, same):
        write_ood(folder, densities)
    return ref, same


def test_check_judges_the_ood_score_when_the_reference_has_ood_npz(artifacts, tmp_path):
    from drifa_edge.drift.check import check_arrays, ood_densities, open_artifact
    from drifa_edge.runtimes.base import RuntimeOptions

    ref, same = _with_density(artifacts, tmp_path)
    policy = DriftPolicy(alpha=0.05, permutations=399)
    rts = [open_artifact(p, "torch", RuntimeOptions()) for p in (ref, same)]
    report = check_arrays(
        *rts, artifacts.test, policy, samples=10, val=artifacts.val, ood=ood_densities(ref, same)
    )
    names = {(c.task, c.name) for c in report.criteria}
    assert {("derm", "spearman_ood"), ("blood", "ood_agreement")} <= names
    assert report.passed, [c.detail for c in report.failures]
    for t in report.tasks.values():  # shared masks, same weights: the same scores
        assert t.ood["agreement"] == 1.0
        assert t.ood["reference"]["flag_rate"] == t.ood["candidate"]["flag_rate"]
    skipped = ood_densities(artifacts.reference, same)
    assert isinstance(skipped, str) and "ood.npz" in skipped
    plain = check_arrays(*rts, artifacts.test, policy, samples=10, val=artifacts.val, ood=skipped)
    assert "ood.npz" in plain.tasks["derm"].ood["skipped"]
    assert not any(c.name == "spearman_ood" for c in plain.criteria)


def _with_prefix_part(f: Features, n: int, seed: int):
    """A format-2 density (issue 18, second round): ``f.density`` plus a prefix part, and
    prefix statistics (N, P) for two runs that differ a little (a quantized prefix)."""
    from drifa_edge.artifact.ood import PrefixDensity

    rng = np.random.default_rng(seed)
    p = 4
    y = rng.integers(0, 2, 300)
    classes, means, precision = fit_class_gaussians(rng.normal(size=(300, p)) + y[:, None], y)
    prefix = PrefixDensity(
        means=means, precision=precision, center=3.0, scale=1.5, embedding_center=5.0, embedding_scale=2.0
    )
    density = TaskDensity(**{**f.density.__dict__, "prefix": prefix, "threshold": 1.0})
    stats_ref = rng.normal(size=(n, p)) * 1.5
    stats_cand = stats_ref + rng.normal(size=(n, p)) * 0.05
    return density, stats_ref, stats_cand


def test_prefix_part_scores_equal_the_records_scorer_observed_and_swapped():
    """With a format-2 density the gate judges the score records carry
    (inference.ood.task_score: prefix part + standardised embedding part): observed pairs with
    each run's own prefix statistics, swapped pairs with the reference's (the null world),
    checked against task_score on runs swapped by hand and scipy's Spearman."""
    from drifa_edge.inference.ood import task_score

    n, draws = 50, 6
    f = Features(n, seed=8)
    density, pre_ref, pre_cand = _with_prefix_part(f, n, seed=9)
    ref, cand = f.run(1, draws=draws), f.run(2, draws=draws, shift=0.3)
    ood = OodFeatures(ref[1], cand[1], density, density, pre_ref, pre_cand)
    nd = permutation_null(ref[0], cand[0], f.labels, 0.1, 0.1, permutations=4, seed=5, ood=ood)
    s_ref = task_score(density, ref[1].mean(axis=1), pre_ref)
    s_cand = task_score(density, cand[1].mean(axis=1), pre_cand)
    assert nd.observed["spearman_ood"] == pytest.approx(spearmanr(s_ref, s_cand).statistic, abs=1e-9)
    assert nd.observed["ood_agreement"] == pytest.approx(((s_ref > 1.0) == (s_cand > 1.0)).mean())
    swaps = next(_swap_batches(np.random.default_rng(5), 4, n, draws))
    for row in range(4):
        s = swaps[:, row, :, None].astype(bool)
        a, b = np.where(s, cand[1], ref[1]), np.where(s, ref[1], cand[1])
        sa = task_score(density, a.mean(axis=1), pre_ref)
        sb = task_score(density, b.mean(axis=1), pre_ref)
        assert nd.null["spearman_ood"][row] == pytest.approx(spearmanr(sa, sb).statistic, abs=1e-6)
        assert nd.null["ood_agreement"][row] == pytest.approx(((sa > 1.0) == (sb > 1.0)).mean(), abs=1e-12)
    with pytest.raises(BadInputError, match="prefix part"):
        OodFeatures(ref[1], cand[1], density, density)
