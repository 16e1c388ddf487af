"""The MC engine: ensembles, seeds, prefix tiling, chunking, memory budget."""

from __future__ import annotations

import numpy as np
import pytest
from inference_helpers import make_checkpoint, tiny_config

from drifa_edge.artifact.card import default_card
from drifa_edge.errors import BadInputError, ConfigError
from drifa_edge.inference.engine import (
    EngineConfig,
    rows_per_call,
    run_mc,
    run_mc_logits,
    softmax,
    suffix_row_bytes,
)
from drifa_edge.metrics.uncertainty import summarize
from drifa_edge.model.config import dropout_shapes, paper_config
from drifa_edge.runtimes.base import RuntimeOptions, open_runtime


def images_for(card, batch: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    s = card.model.image_size
    return [rng.standard_normal((batch, t.channels, s, s)).astype(np.float32) for t in card.model.tasks]


class FakeRuntime:
    """Logits = fixed per member + a per-row offset (so samples differ); records its calls."""

    name, precision, device, seedable = "fake", "fp32", "cpu", True

    def __init__(self, card, base: list[np.ndarray]) -> None:
        self.card, self.base = card, base
        self.seeds, self.suffix_rows, self.prefix_rows = [], [], []

    def run_prefix(self, images):
        self.prefix_rows.append(images[0].shape[0])
        return [x.reshape(x.shape[0], -1)[:, :1].copy() for x in images]  # (B, 1): the first pixel

    def run_suffix(self, features, uniforms=None):
        n = features[0].shape[0]
        self.suffix_rows.append(n)
        jitter = np.linspace(-0.5, 0.5, n, dtype=np.float32)[:, None]
        return [np.repeat(b[None], n, axis=0) + jitter * (k + 1) for k, b in enumerate(self.base)]

    def reseed(self, seed):
        self.seeds.append(seed)

    def close(self):
        pass


def test_ensemble_combines_every_member_sample():
    cfg = tiny_config()
    card_a = default_card(cfg)
    card_b = default_card(cfg, temperature={"derm": 2.0})
    a = FakeRuntime(card_a, [np.array([2.0, 0.0, -1.0]), np.array([0.5, 0.0])])
    b = FakeRuntime(card_b, [np.array([-1.0, 1.0, 0.0]), np.array([0.0, 1.5])])
    x = images_for(card_a, batch=2)
    engine = EngineConfig(samples=4, seed=7, max_rows=3)
    probs = run_mc([a, b], x, engine)
    assert probs["derm"].shape == (2, 8, 3) and probs["blood"].shape == (2, 8, 2)
    # independent reconstruction: 8 rows (2 cases x 4 samples) in calls of 3, 3 and 2 rows, each
    # call's rows offset by linspace(-0.5, 0.5); member a at temperature 1, member b at 2
    rows_a = np.concatenate([np.linspace(-0.5, 0.5, n) for n in (3, 3, 2)])
    za = np.array([2.0, 0.0, -1.0]) + rows_a[:, None]
    zb = np.array([-1.0, 1.0, 0.0]) + rows_a[:, None]
    expected = np.concatenate([softmax(za, 1.0).reshape(2, 4, 3), softmax(zb, 2.0).reshape(2, 4, 3)], axis=1)
    np.testing.assert_allclose(probs["derm"], expected, atol=1e-6)
    mean = summarize(probs["derm"])["mean"]
    np.testing.assert_allclose(mean, expected.mean(axis=1), atol=1e-9)
    member0_only = expected[:, :4].mean(axis=1)  # the notebook's way
    assert np.abs(mean - member0_only).max() > 0.05
    assert a.seeds == [7] and b.seeds == [8]  # members never share a mask stream
    raw = run_mc_logits([a, b], x, engine)
    assert raw["blood"].shape == (2, 8, 2)


def test_prefix_runs_once_per_case_and_chunks_stay_bounded():
    card = default_card(tiny_config())
    rt = FakeRuntime(card, [np.zeros(3), np.zeros(2)])
    run_mc([rt], images_for(card, batch=5), EngineConfig(samples=7, max_rows=4))
    assert max(rt.suffix_rows) <= 4 and sum(rt.suffix_rows) == 5 * 7
    assert sum(rt.prefix_rows) == 5  # each case's prefix computed exactly once
    rt2 = FakeRuntime(card, [np.zeros(3), np.zeros(2)])
    run_mc([rt2], images_for(card, batch=5), EngineConfig(samples=7, max_rows=4, prefix_once=False))
    assert sum(rt2.prefix_rows) == 5 * 7  # the authors' way: prefix on every tiled row


def test_case_seeds_restart_each_case():
    card = default_card(tiny_config())
    rt = FakeRuntime(card, [np.zeros(3), np.zeros(2)])
    run_mc([rt], images_for(card, batch=3), EngineConfig(samples=4, max_rows=32), case_seeds=[5, 6, 9])
    assert rt.seeds == [5, 6, 9] and rt.suffix_rows == [4, 4, 4]  # no call mixes two cases
    with pytest.raises(ConfigError):
        run_mc([rt], images_for(card, batch=3), EngineConfig(samples=4), case_seeds=[1])


def test_engine_refuses_bad_arrays():
    card = default_card(tiny_config())
    rt = FakeRuntime(card, [np.zeros(3), np.zeros(2)])
    x = images_for(card, batch=2)
    with pytest.raises(BadInputError, match="modalities"):
        run_mc([rt], x[:1], EngineConfig(samples=2))
    with pytest.raises(BadInputError, match="expected shape"):
        run_mc([rt], [x[0], x[1][:, :, :16]], EngineConfig(samples=2))
    x[0][0, 0, 0, 0] = np.nan
    with pytest.raises(BadInputError, match="NaN"):
        run_mc([rt], x, EngineConfig(samples=2))
    with pytest.raises(ConfigError):
        run_mc([], x, EngineConfig(samples=2))
    for bad in ({"samples": 0}, {"max_rows": 0}, {"memory_mb": 0.0}):
        with pytest.raises(ConfigError):
            EngineConfig(**bad)


def test_memory_budget_lowers_rows_per_call():
    model = paper_config()
    per_row = suffix_row_bytes(model)
    # the two largest dropout inputs (64 x 32 x 32 fp32 per branch) times the activation factor
    assert per_row == 16 * 4 * 64 * 32 * 32 * 2
    assert rows_per_call(EngineConfig(max_rows=32), model) == 30  # whole cases of T = 30
    assert rows_per_call(EngineConfig(max_rows=32, memory_mb=per_row * 5.5 / 2**20), model) == 5  # 6 x 5
    # 11 rows fit in bf16: a case of 30 rows needs 3 calls, of 10 each (not 11 + 11 + 8)
    assert rows_per_call(EngineConfig(max_rows=32, memory_mb=per_row * 5.5 / 2**20), model, "bf16") == 10
    for samples, max_rows, rows in ((10, 32, 30), (1, 32, 32), (50, 32, 25), (7, 32, 28), (30, 64, 60)):
        assert rows_per_call(EngineConfig(samples=samples, max_rows=max_rows), model) == rows
    with pytest.raises(ConfigError, match="below one suffix row"):
        rows_per_call(EngineConfig(memory_mb=0.5), model)
    card = default_card(tiny_config())
    rt = FakeRuntime(card, [np.zeros(3), np.zeros(2)])
    budget = suffix_row_bytes(card.model) * 3 / 2**20
    run_mc([rt], images_for(card, batch=2), EngineConfig(samples=5, max_rows=32, memory_mb=budget))
    assert max(rt.suffix_rows) == 3


# ------------------------------------------------------------------ with the torch runtime


@pytest.fixture(scope="module")
def torch_rt(checkpoint):
    pytest.importorskip("torch")
    rt = open_runtime("torch", checkpoint, RuntimeOptions(threads=1))
    yield rt
    rt.close()


def test_seed_reproducibility_torch(torch_rt):
    x = images_for(torch_rt.card, batch=3)
    cfg = EngineConfig(samples=6, seed=3, max_rows=8)
    first, again = run_mc([torch_rt], x, cfg), run_mc([torch_rt], x, cfg)
    other = run_mc([torch_rt], x, cfg.replace(seed=4))
    for task in first:
        np.testing.assert_array_equal(first[task], again[task])
        assert np.abs(first[task] - other[task]).max() > 1e-4
        assert first[task].std(axis=1).max() > 1e-4  # dropout really is on: samples differ


def test_prefix_tiling_equals_full_passes_under_identical_masks(torch_rt, checkpoint):
    torch = pytest.importorskip("torch")
    from drifa_edge.artifact.checkpoint import load_checkpoint
    from drifa_edge.model.dropout import dropouts

    card = torch_rt.card
    B, T = 2, 3
    x = images_for(card, batch=B, seed=1)
    rng = np.random.default_rng(2)
    uniforms = [rng.random((B * T, *s), dtype=np.float32) for s in dropout_shapes(card.model)]
    tiled = [np.repeat(f, T, axis=0) for f in torch_rt.run_prefix(x)]  # prefix once, tiled
    engine_logits = torch_rt.run_suffix(tiled, uniforms)
    model, _ = load_checkpoint(checkpoint)  # an independent copy, contiguous layout
    for layer, u in zip(dropouts(model), uniforms, strict=True):
        layer.mode, layer.uniform = "external", torch.from_numpy(u)
    with torch.inference_mode():
        full = model([torch.from_numpy(np.repeat(a, T, axis=0)) for a in x])  # T full passes
    for z, ref in zip(engine_logits, full, strict=True):
        np.testing.assert_allclose(z, ref.numpy(), rtol=1e-4, atol=1e-5)
    other = torch_rt.run_suffix(tiled, [1.0 - u for u in uniforms])  # other masks -> other logits
    assert np.abs(other[0] - engine_logits[0]).max() > 1e-3


@pytest.mark.parametrize("prefix_once", [True, False])
def test_chunking_invariance_with_dropout_off(checkpoint, prefix_once):
    pytest.importorskip("torch")
    rt = open_runtime("torch", checkpoint, RuntimeOptions(threads=1, extra={"dropout": "off"}))
    x = images_for(rt.card, batch=3, seed=4)
    outs = [
        run_mc([rt], x, EngineConfig(samples=5, max_rows=r, prefix_once=prefix_once)) for r in (1, 4, 7, 64)
    ]
    for out in outs[1:]:
        for task in out:
            np.testing.assert_allclose(out[task], outs[0][task], atol=1e-5)
    assert np.abs(outs[0]["derm"][0] - outs[0]["derm"][1]).max() > 1e-4  # cases do differ


def test_case_seeds_make_a_case_independent_of_its_batch(torch_rt):
    x = images_for(torch_rt.card, batch=3, seed=5)
    seeds = [11, 22, 33]
    whole = run_mc([torch_rt], x, EngineConfig(samples=4, max_rows=32), case_seeds=seeds)
    alone = run_mc([torch_rt], [a[1:2] for a in x], EngineConfig(samples=4, max_rows=4), case_seeds=[22])
    for task in whole:
        np.testing.assert_allclose(alone[task][0], whole[task][1], atol=1e-6)


def test_ensemble_of_two_checkpoints_torch(tmp_path):
    pytest.importorskip("torch")
    members = [make_checkpoint(tmp_path / f"m{k}", seed=k) for k in range(2)]
    rts = [open_runtime("torch", m, RuntimeOptions(threads=1)) for m in members]
    x = images_for(rts[0].card, batch=2)
    cfg = EngineConfig(samples=3, seed=0)
    both = run_mc(rts, x, cfg)["derm"]
    first = run_mc(rts[:1], x, cfg)["derm"]
    second = run_mc(rts[1:], x, cfg.replace(seed=1))["derm"]  # member 1 runs on seed + 1
    np.testing.assert_allclose(both, np.concatenate([first, second], axis=1), atol=1e-6)
