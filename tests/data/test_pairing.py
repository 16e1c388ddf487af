"""pairing: index mode resamples to the longest set and reshuffles; case_id mode joins."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from drifa_edge.data.pairing import PairedSampler
from drifa_edge.data.sources import LabelledSet, Sample
from drifa_edge.errors import ConfigError


def _set(name: str, n: int, cases: list[str] | None = None) -> LabelledSet:
    samples = [Sample(f"{name}{i}", i % 2, "train", cases[i] if cases else None) for i in range(n)]
    arrays = {s.key: np.zeros((2, 2, 1), np.float32) for s in samples}
    return LabelledSet(name, ("a", "b"), samples, arrays=arrays, kind="test")


def test_index_mode_resamples_shorter_sets_evenly() -> None:
    sampler = PairedSampler({"long": _set("long", 10), "short": _set("short", 4)}, seed=0)
    assert len(sampler) == 10
    epochs = [sampler.epoch(e) for e in range(2)]
    for rows in epochs:
        assert sorted(r["long"] for r in rows) == list(range(10))  # the longest set: each sample once
        assert set(Counter(r["short"] for r in rows).values()) <= {2, 3}  # 10 draws of 4: 2 or 3 each
    total = Counter(r["short"] for rows in epochs for r in rows)
    assert set(total.values()) == {5}  # 20 draws over 2 epochs: exactly 5 each (permutation walk)


def test_index_mode_reshuffles_and_is_deterministic() -> None:
    sets = {"a": _set("a", 30), "b": _set("b", 7)}
    sampler = PairedSampler(sets, seed=5)
    assert sampler.epoch(0) != sampler.epoch(1)
    assert PairedSampler(sets, seed=5).epoch(3) == sampler.epoch(3)  # any epoch reproducible on its own
    assert PairedSampler(sets, seed=6).epoch(0) != sampler.epoch(0)
    swapped = PairedSampler({"b": sets["b"], "a": sets["a"]}, seed=5).epoch(0)
    assert swapped == sampler.epoch(0)  # option order does not change the draw


def test_case_id_mode_inner_join() -> None:
    derm = _set("derm", 6, [f"p{i}" for i in range(6)])
    scan = _set("scan", 5, ["p2", "p3", "p3", "p4", "p9"])
    sampler = PairedSampler({"derm": derm, "scan": scan}, mode="case_id", seed=0)
    rows = sampler.epoch(0)
    assert len(rows) == len(sampler) == 4  # p2, p3 (two scans -> two rows), p4
    for r in rows:
        assert derm.samples[r["derm"]].case_id == scan.samples[r["scan"]].case_id
    assert sorted(r["scan"] for r in rows) == [0, 1, 2, 3]
    orders = {tuple(tuple(sorted(r.items())) for r in sampler.epoch(e)) for e in range(6)}
    assert len(orders) > 1  # shuffled per epoch


def test_case_id_mode_errors() -> None:
    with pytest.raises(ConfigError, match="lacks case ids"):
        PairedSampler({"a": _set("a", 3, ["x", "y", "z"]), "b": _set("b", 3)}, mode="case_id")
    with pytest.raises(ConfigError, match="no case id appears in every data set"):
        PairedSampler({"a": _set("a", 2, ["x", "y"]), "b": _set("b", 2, ["u", "v"])}, mode="case_id")
    with pytest.raises(ConfigError, match="pairing mode"):
        PairedSampler({"a": _set("a", 2)}, mode="zip")
    with pytest.raises(ConfigError, match="no samples"):
        PairedSampler({"a": _set("a", 0)})
