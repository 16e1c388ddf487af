"""Cached training arrays: preprocessing, channels, normalization, batches, evaluation rows."""

from __future__ import annotations

import numpy as np
import pytest

from drifa_edge.data.preprocess import preprocess
from drifa_edge.data.synthetic import make_synthetic
from drifa_edge.errors import ConfigError
from drifa_edge.training.config import TrainConfig
from drifa_edge.training.data import check_sets, flip, infer_channels, prepare_data

CFG = TrainConfig(image_size=32, batch_size=8, seed=0)


@pytest.fixture(scope="module")
def sets():
    return make_synthetic(n_per_class=10, size=40, seed=1)


@pytest.fixture(scope="module")
def data(sets):
    return prepare_data(sets, CFG)


def test_arrays_are_what_the_runtime_preprocessing_gives(sets, data):
    """Training sees exactly the pixels a runtime would: preprocess(image, card spec)."""
    for name, task in data.tasks.items():
        sub = sets[name].subset("val")
        spec = data.preprocess_specs()[name]
        for i in (0, len(sub.samples) - 1):
            np.testing.assert_allclose(task.splits["val"].x[i], preprocess(sub.load(i), spec), atol=1e-6)
        assert task.splits["val"].y.tolist() == [s.label for s in sub.samples]


def test_channels_are_inferred_and_can_be_overridden(sets, data):
    assert infer_channels(sets["derm"]) == 3 and infer_channels(sets["scan"]) == 1
    assert [t.channels for t in data.task_specs()] == [3, 1]
    forced = prepare_data(sets, CFG.replace(channels={"derm": 1}))
    assert forced.tasks["derm"].splits["train"].x.shape[1] == 1
    with pytest.raises(ConfigError, match="unknown tasks"):
        prepare_data(sets, CFG.replace(channels={"nope": 1}))


def test_train_normalization_uses_train_statistics(sets):
    data = prepare_data(sets, CFG.replace(normalize="train"))
    for task in data.tasks.values():
        x = task.splits["train"].x
        # after normalizing with its own statistics, the train split has mean 0 and std 1 per channel
        np.testing.assert_allclose(x.mean(axis=(0, 2, 3)), 0.0, atol=1e-4)
        np.testing.assert_allclose(x.std(axis=(0, 2, 3)), 1.0, atol=1e-3)
        assert task.preprocess.mean != (0.5,) * task.preprocess.channels


def test_batches_cover_an_epoch(data):
    batches = list(data.train_batches(0))
    n = len(data.train_pairs(0))
    assert sum(ys[0].size for _, ys in batches) == n - (n % CFG.batch_size if n % CFG.batch_size == 1 else 0)
    assert len(batches) == data.batches_per_epoch()
    xs, ys = batches[0]
    assert [x.shape for x in xs] == [(8, 3, 32, 32), (8, 1, 32, 32)]
    assert all(x.dtype == np.float32 for x in xs) and all(y.dtype == np.int64 for y in ys)
    # another epoch, another order; the same epoch again, the same batches
    again = list(data.train_batches(0))
    assert all(np.array_equal(a[1][0], b[1][0]) for a, b in zip(batches, again, strict=True))
    other = list(data.train_batches(1))
    assert not all(np.array_equal(a[1][0], b[1][0]) for a, b in zip(batches, other, strict=False))


def test_max_train_pairs_caps_the_epoch(sets):
    data = prepare_data(sets, CFG.replace(max_train_pairs=10))
    assert len(data.train_pairs(0)) == 10
    assert sum(ys[0].size for _, ys in data.train_batches(0)) == 10


def test_flip_is_a_mirror():
    x = np.arange(2 * 1 * 3 * 3, dtype=np.float32).reshape(2, 1, 3, 3)
    rng = np.random.default_rng(0)
    y = flip(x, rng)
    for a, b in zip(x, y, strict=True):
        assert any(np.array_equal(b, f) for f in (a, a[..., ::-1], a[:, ::-1, :], a[:, ::-1, ::-1]))
    assert np.array_equal(x, np.arange(18, dtype=np.float32).reshape(2, 1, 3, 3))  # input untouched
    many = flip(np.repeat(x[:1], 200, axis=0), np.random.default_rng(1))
    assert len({m.tobytes() for m in many}) == 4  # all four flips occur


def test_eval_rows_score_every_case_once(sets, data):
    xs, ys = data.eval_rows("test")
    for name, y in zip(data.names, ys, strict=True):
        scored = y[y >= 0]
        assert scored.size == len(sets[name].subset("test").samples)
        assert sorted(scored.tolist()) == sorted(s.label for s in sets[name].subset("test").samples)
    assert all(x.shape[0] == ys[0].size for x in xs)


def test_modality_count_is_checked(sets):
    with pytest.raises(ConfigError, match="2 to 4 modalities"):
        check_sets({"derm": sets["derm"]})
    many = make_synthetic(n_per_class=3, size=32, tasks=4)
    check_sets(many)  # four is allowed
