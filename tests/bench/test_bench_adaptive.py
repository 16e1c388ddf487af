"""`drifa-edge bench --adaptive`: per-case timing of adaptive against fixed T in a worker
row, its JSON fields, and the options reaching the row spec."""

from __future__ import annotations

import json

import pytest

from drifa_edge.bench.rows import RowSpec
from drifa_edge.bench.runner import BenchConfig, _base_spec
from drifa_edge.bench.table import adaptive_line
from drifa_edge.bench.worker import run_row
from drifa_edge.errors import ConfigError
from drifa_edge.inference.adaptive import AdaptiveConfig

ADAPTIVE = AdaptiveConfig(min_samples=4, block=3, rule="precision", se_tolerance=1e3)


def test_worker_times_adaptive_against_fixed_case_by_case(tiny_checkpoint):
    pytest.importorskip("torch")
    spec = RowSpec(
        row_id="torch-fp32", runtime="torch", precision="fp32", path=str(tiny_checkpoint),
        samples=(10,), warmup=1, repeats=1, min_repeats=1, threads=1,
        adaptive=ADAPTIVE.to_dict(), adaptive_cases=3,
    )  # fmt: skip
    spec = RowSpec.from_json(spec.to_json())  # what the parent hands the subprocess
    a = run_row(spec)["adaptive"]
    assert a["cases"] == 3 and a["inputs"] == "random" and a["max_samples"] == 10
    assert [c["rows"] for c in a["per_case"]] == [4, 4, 4]  # this rule settles at the first look
    assert a["rows_per_case_mean"] == 4 and a["row_ratio"] == pytest.approx(2.5)
    for side in ("fixed_ms", "adaptive_ms"):
        assert a[side]["p50"] <= a[side]["p95"] <= a[side]["p99"]
    speedups = sorted(c["fixed_ms"] / c["adaptive_ms"] for c in a["per_case"])
    assert a["speedup_median"] == pytest.approx(speedups[1])
    assert 0.0 <= a["same_decisions"] <= 1.0 and 0.0 <= a["same_decisions_two_fixed"] <= 1.0
    json.dumps(a)  # stays JSON
    assert "2.50x fewer" in adaptive_line("torch-fp32", a)


def test_bench_config_hands_adaptive_to_every_row(tiny_checkpoint, tmp_path):
    cfg = BenchConfig(artifact=tiny_checkpoint, samples=(10,), adaptive=ADAPTIVE, adaptive_cases=5)
    spec = _base_spec(cfg, None, tmp_path)
    assert spec.adaptive == ADAPTIVE.to_dict() and spec.adaptive_cases == 5
    with pytest.raises(ConfigError, match="below the adaptive T_min"):
        BenchConfig(artifact=tiny_checkpoint, samples=(3,), adaptive=ADAPTIVE)
    with pytest.raises(ConfigError, match="adaptive-cases"):
        BenchConfig(artifact=tiny_checkpoint, adaptive_cases=0)
