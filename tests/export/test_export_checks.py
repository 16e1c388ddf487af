"""The export checks, first on numpy stand-ins whose truth is known, then end to end:
a wrong export must be caught with the numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from drifa_edge.artifact.card import default_card
from drifa_edge.errors import ConfigError, ParityError
from drifa_edge.export import checks
from drifa_edge.model.config import ModelConfig, TaskSpec, dropout_shapes


class FakeRuntime:
    """A linear 'model' with dropout on its features, in numpy: logits = W (mask * x) / (1 - p)."""

    name = "fake"
    precision = "fp32"
    device = "cpu"
    seedable = False

    def __init__(self, p=0.25, scale=True, offset=0.0, seed=None):
        cfg = ModelConfig(tasks=(TaskSpec("a", ("x", "y", "z")), TaskSpec("b", ("p", "q"), 1)), image_size=32)
        self.card = default_card(cfg)
        self.p, self.scale, self.offset = p, scale, offset
        self.rng = np.random.default_rng(seed)
        w = np.random.default_rng(42)
        self.weights = [w.standard_normal((16, 3)), w.standard_normal((16, 2))]

    def reseed(self, seed):
        pass

    def run_prefix(self, images):
        return [x.reshape(x.shape[0], -1)[:, :16].astype(np.float32) for x in images]

    def run_suffix(self, features, uniforms=None):
        u = uniforms[0][:, :16, 0, 0] if uniforms is not None else self.rng.random(features[0].shape)
        keep = (u >= self.p) / ((1 - self.p) if self.scale else 1.0)
        logits = [(f * keep) @ w for f, w in zip(features, self.weights, strict=True)]
        logits[0] = logits[0] + self.offset  # a deliberate error on task a
        return logits


def images(rt, n=4):
    return checks.random_images(rt, n, seed=0)


def test_check_config_is_validated():
    with pytest.raises(ConfigError, match="T >= 200"):
        checks.CheckConfig(samples=100)
    with pytest.raises(ConfigError, match="at least 1 case"):
        checks.CheckConfig(cases=0)


def test_deterministic_parity_measures_the_largest_probability_difference():
    config = checks.CheckConfig()
    ref = FakeRuntime(p=0.0)
    assert checks.check_deterministic(ref, FakeRuntime(p=0.0), images(ref), config).value == 0.0
    off = checks.check_deterministic(
        ref, FakeRuntime(p=0.0, offset=np.array([0.0, 0.0, 1e-2])), images(ref), config
    )
    assert not off.passed and 1e-4 < off.value < 1e-2  # a logit shift of 0.01 moves p by < 0.01
    assert off.limit == 1e-4


def test_fixed_masks_feed_the_same_uniforms_to_both():
    config = checks.CheckConfig()
    ref, cand = FakeRuntime(seed=1), FakeRuntime(seed=2)
    assert (
        checks.check_fixed_masks(ref, cand, images(ref), config).value == 0.0
    )  # rng streams differ, masks not
    assert not checks.check_fixed_masks(ref, FakeRuntime(p=0.5), images(ref), config).passed


def test_stochastic_check_needs_varying_masks():
    rt = FakeRuntime()
    assert checks.check_stochastic(rt, images(rt)).passed
    frozen = FakeRuntime(p=0.0)  # dropout that does nothing
    result = checks.check_stochastic(frozen, images(frozen))
    assert not result.passed and result.details["max_abs_diff_between_calls"] == 0.0


def test_random_uniforms_follow_dropout_shapes():
    rt = FakeRuntime()
    us = checks.random_uniforms(rt, 3, seed=0)
    assert [u.shape[1:] for u in us] == dropout_shapes(rt.card.model)
    assert all(u.dtype == np.float32 and 0.0 <= u.min() and u.max() < 1.0 for u in us)


def test_std_error_of_std_matches_a_monte_carlo_estimate():
    """The delta-method SE of a sample std vs the spread of 4000 replicate stds (skewed data)."""
    rng = np.random.default_rng(0)
    data = rng.beta(0.5, 3.0, size=(4000, 256, 1))  # bounded and skewed, like a class probability
    std, se = checks._std_error_of_std(data)
    assert se.mean() == pytest.approx(std.std(), rel=0.1)


def test_mc_comparison_passes_same_distribution_and_catches_shifts():
    rng = np.random.default_rng(0)

    def draws(scale, shift=0.0):  # (B, T, C) softmax of noisy logits
        z = rng.standard_normal((6, 256, 3)) * scale + np.array([0.5, 0.0, -0.5]) + shift
        e = np.exp(z)
        return e / e.sum(-1, keepdims=True)

    ref = draws(0.5)
    ok, worst, _ = checks.compare_mc_samples(ref, draws(0.5), z=5.0, floor=1e-4)
    assert ok and worst < 1.0
    ok, _, details = checks.compare_mc_samples(ref, draws(0.4), z=5.0, floor=1e-4)  # 20% less spread
    assert not ok and details["pooled_std_shift_z"] < -5
    ok, _, details = checks.compare_mc_samples(ref, draws(0.5, np.array([0.3, 0.0, 0.0])), z=5.0, floor=1e-4)
    assert not ok and details["max_mean_diff_in_se"] > 5


def test_mc_consistency_catches_a_wrong_dropout_rate():
    config = checks.CheckConfig(cases=4, samples=256)
    ref = FakeRuntime(seed=0)
    assert checks.check_mc_consistency(ref, FakeRuntime(seed=1), images(ref), config).passed
    assert not checks.check_mc_consistency(ref, FakeRuntime(p=0.5, seed=1), images(ref), config).passed
    assert not checks.check_mc_consistency(ref, FakeRuntime(scale=False, seed=1), images(ref), config).passed


def test_record_and_raise(tmp_path):
    from drifa_edge.artifact.card import write_card

    write_card(FakeRuntime().card, tmp_path)
    good = checks.CheckResult("deterministic_parity", "fake", True, 1e-8, 1e-4)
    bad = checks.CheckResult("mc_consistency", "fake", False, 3.2, 1.0, {"a": {"max_mean_diff_in_se": 16.0}})
    checks.record_checks(tmp_path, [good, bad])
    recorded = json.loads((tmp_path / "checks.json").read_text())
    assert recorded["fake"]["mc_consistency"]["value"] == 3.2
    from drifa_edge.artifact.card import read_card

    card = read_card(tmp_path)  # checks.json is hashed: verification passes
    assert card.export["checks"] == {"fake": {"deterministic_parity": True, "mc_consistency": False}}
    checks.raise_on_failure(tmp_path, [good])
    with pytest.raises(ParityError, match=r"mc_consistency FAILED \(3.2 vs limit 1\).*16"):
        checks.raise_on_failure(tmp_path, [good, bad])


def test_a_wrong_export_is_caught_end_to_end(tiny_checkpoint, checkpoint_builder, tmp_path):
    """Export a model whose dropout rate is 0.1 and check it against the p = 0.25 checkpoint
    with the same weights: dropout-off parity holds, fixed masks and MC statistics do not."""
    pytest.importorskip("onnxruntime")
    from drifa_edge.export.onnx import export_onnx

    wrong = checkpoint_builder(tmp_path / "p01", seed=0, dropout=0.1)
    export_onnx(wrong, tmp_path / "out", check=False)
    results = {
        r.name: r
        for r in checks.run_checks(
            tiny_checkpoint, tmp_path / "out", "onnxruntime", checks.CheckConfig(cases=4, samples=200)
        )
    }
    assert results["deterministic_parity"].passed
    assert not results["fixed_mask_parity"].passed
    assert results["mc_stochastic"].passed
    assert not results["mc_consistency"].passed
    with pytest.raises(ParityError, match="fixed_mask_parity FAILED"):
        checks.raise_on_failure(tmp_path / "out", list(results.values()))
