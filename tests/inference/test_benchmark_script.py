"""benchmarks/mc_inference.py runs end to end (tiny model) and its two ways agree."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("torch")

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "mc_inference.py"


@pytest.mark.slow
def test_mc_inference_benchmark_quick(tmp_path):
    spec = importlib.util.spec_from_file_location("mc_inference_bench", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "r.json"
    args = ["--quick", "--samples", "2", "--repeats", "1", "--warmup", "0", "--throughput-repeats", "1"]
    bench.main([*args, "--cases", "2", "--threads", "1", "--out", str(out)])
    result = json.loads(out.read_text())
    assert set(result["ms_per_case"]) == {"authors", "engine", "engine_contiguous"}
    assert result["dropout_off_max_abs_logit_diff"] < 1e-4  # the engine computes the same network
    assert result["speedup_vs_authors"] > 0 and result["peak_memory"]["engine"]["peak_rss_mib"] > 0
