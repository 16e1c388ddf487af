"""The benchmark end to end on a tiny model: every column, skipped rows, crashing rows.

Speed is never asserted; only that every number is there and that derived
numbers (speed-up, throughput, size) agree with the raw measurements.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from drifa_edge.bench import rows, run_bench
from drifa_edge.bench.quality import quality_metrics
from drifa_edge.bench.rows import RowSpec
from drifa_edge.bench.runner import merge_rounds, run_worker
from drifa_edge.bench.table import COLUMNS, bench_table, csv_columns
from drifa_edge.bench.worker import CRASH_ENV, cell_summary

FAST = {"repeats": 2, "warmup": 1}


def test_table_has_every_column(tiny_checkpoint: Path, tmp_path: Path):
    from drifa_edge.cli import app

    out = tmp_path / "out"
    args = [
        "bench",
        str(tiny_checkpoint),
        "--runtimes",
        "authors,torch",
        "--samples",
        "3,2",
        "--batch",
        "1,2",
    ]
    result = CliRunner().invoke(
        app, [*args, "--repeats", "2", "--warmup", "1", "--out", str(out)], env={"COLUMNS": "250"}
    )
    assert result.exit_code == 0, result.output
    for head in (
        "runtime",
        "device",
        "status",
        "size MB",
        "load s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "cases/s",
        "speed-up",
        "peak RSS MB",
        "T x batch sweep",
    ):
        assert head in result.output

    data = json.loads((out / "bench.json").read_text())
    assert data["format"] == "drifa-edge-bench/1" and data["baseline"] == "authors-fp32"
    assert len(data["machine"]["loadavg_start"]) == 3
    by_id = {r["row_id"]: r for r in data["rows"]}
    assert set(by_id) == {"authors-fp32", "torch-fp32"}
    weights = (tiny_checkpoint / "model.safetensors").stat().st_size
    authors = {(c["samples"], c["batch"]): c for c in by_id["authors-fp32"]["sweep"]}
    for row in by_id.values():
        assert row["status"] == "ok" and row["device"] == "cpu" and row["precision"] == "fp32"
        assert row["size_bytes"] == weights
        assert row["load_s"] > 0 and row["peak_rss_mb"] > 10
        cells = {(c["samples"], c["batch"]): c for c in row["sweep"]}
        assert set(cells) == {(3, 1), (3, 2), (2, 1), (2, 2)}
        for key, c in cells.items():
            ms = c["call_ms"]
            assert c["repeats"] == 2 and ms["min"] <= ms["p50"] <= ms["p95"] <= ms["p99"]
            assert c["cases_per_s"] == pytest.approx(1000.0 * key[1] / ms["mean"])
            assert c["speedup"] == pytest.approx(authors[key]["call_ms"]["p50"] / ms["p50"])

    with open(out / "bench.csv", newline="") as f:
        reader = csv.DictReader(f)
        lines = list(reader)
    assert reader.fieldnames == csv_columns(("derm", "scan"))
    assert set(COLUMNS) <= set(reader.fieldnames)
    torch_line = next(line for line in lines if line["row_id"] == "torch-fp32")
    assert (torch_line["samples"], torch_line["batch"]) == ("3", "1")  # the first T and batch
    assert float(torch_line["latency_p50_ms"]) == pytest.approx(
        by_id["torch-fp32"]["sweep"][0]["call_ms"]["p50"]
    )
    assert float(torch_line["size_mb"]) == pytest.approx(weights / 1e6)


def test_skipped_and_crashing_rows_do_not_stop_the_others(
    tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setitem(rows.REGISTRY, "openvino", "drifa_edge.runtimes.no_such_runtime:open_runtime")
    monkeypatch.setenv(CRASH_ENV, "authors-fp32:segv,torch-bf16:exit")
    selection = "authors,torch,torch:bf16,openvino:fp32,onnxruntime:int8"
    seen = []
    result = run_bench(
        tiny_checkpoint,
        runtimes=selection,
        samples=2,
        rounds=2,
        on_row=lambda r: seen.append(r["row_id"]),
        **FAST,
    )
    by_id = {r["row_id"]: r for r in result.rows}
    # round 2 runs in the other order and only the rows that were ok in round 1
    assert seen == [*by_id, "torch-fp32"]
    assert list(by_id) == ["authors-fp32", "torch-fp32", "torch-bf16", "onnxruntime-int8", "openvino-fp32"]
    # a runtime whose module is missing, and a precision whose folder is missing: skipped, with the reason
    assert by_id["openvino-fp32"]["status"] == "skipped"
    assert "drifa_edge.runtimes.no_such_runtime is not installed" in by_id["openvino-fp32"]["reason"]
    assert by_id["onnxruntime-int8"]["status"] == "skipped" and by_id["onnxruntime-int8"]["reason"]
    # crashes: a signal and an exit code, each with the row's last stderr line
    assert by_id["authors-fp32"]["status"] == "failed"
    assert "signal SIGSEGV" in by_id["authors-fp32"]["reason"]
    assert by_id["torch-bf16"]["status"] == "failed"
    assert "exit code 3" in by_id["torch-bf16"]["reason"]
    assert f"{CRASH_ENV}: crashing row torch-bf16" in by_id["torch-bf16"]["reason"]
    torch_row = by_id["torch-fp32"]
    assert torch_row["status"] == "ok" and torch_row["sweep"][0]["speedup"] is None  # no baseline to compare
    assert torch_row["rounds"] == 2 and torch_row["sweep"][0]["repeats"] == 2  # one timed call per round

    console = Console(record=True, width=250)
    console.print(bench_table(result))
    text = console.export_text()
    footnote = text[text.index("drifa_edge.runtimes.no_such_runtime") - 25 :]
    number = footnote[footnote.index("[") : footnote.index("]") + 1]  # "[n]": the reason's footnote
    assert f"skipped {number}" in text and f"{number} the runtime module drifa_edge.runtimes.no_such" in text
    assert "failed [" in text


@pytest.mark.parametrize(
    ("how", "expected"),
    [("raise", "exit code 1 without a result"), ("hang", "timeout after 3 s")],
)
def test_worker_failures_become_the_row_status(tmp_path, monkeypatch, how, expected):
    monkeypatch.setenv(CRASH_ENV, f"ghost-fp32:{how}")
    spec = RowSpec(row_id="ghost-fp32", runtime="torch", precision="fp32", path=str(tmp_path))
    result = run_worker(spec, timeout_s=3, workdir=tmp_path)
    assert result["status"] == "failed" and expected in result["reason"]


def test_worker_reports_an_error_inside_the_row_as_failed(tmp_path):
    pytest.importorskip("onnxruntime")
    # a folder without an export: the runtime raises, the worker still prints one result line
    spec = RowSpec(
        row_id="onnxruntime-fp32", runtime="onnxruntime", precision="fp32", path=str(tmp_path / "no")
    )
    result = run_worker(spec, timeout_s=60, workdir=tmp_path)
    assert result["status"] == "failed" and "ArtifactError" in result["reason"]
    assert (result["runtime"], result["precision"]) == ("onnxruntime", "fp32")


def test_unavailable_dependency_is_a_skip(monkeypatch, capsys):
    from drifa_edge.bench import worker
    from drifa_edge.runtimes import base

    monkeypatch.setattr(base, "probe_runtime", lambda name: {"available": False, "reason": "no CUDA device"})
    spec = RowSpec(row_id="tensorrt-x-fp16", runtime="tensorrt", precision="fp16", path="/nowhere")
    assert worker.main(["--spec", spec.to_json()]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    result = json.loads(line[len(worker.RESULT_MARKER) :])
    assert result["status"] == "skipped" and result["reason"] == "tensorrt unavailable: no CUDA device"


def test_data_adds_accuracy_calibration_and_gate(tiny_checkpoint: Path, tmp_path: Path):
    result = run_bench(
        tiny_checkpoint, runtimes="authors,torch", samples=2, data="synthetic", limit=12, out=tmp_path, **FAST
    )
    assert result.reference == "torch-fp32"
    by_id = {r["row_id"]: r for r in result.rows}
    assert by_id["torch-fp32"]["gate"]["verdict"] == "reference"
    assert by_id["torch-fp32"]["noise_floor"]["seed"] == 1  # the reference again, other masks
    assert by_id["authors-fp32"]["gate"]["verdict"] in ("pass", "fail")
    for row in by_id.values():
        assert row["eval"]["cases"] == 12 and row["eval"]["samples"] == 2
        for task in ("derm", "scan"):
            m = row["metrics"][task]
            assert 0 <= m["accuracy"] <= 1 and 0 <= m["macro_f1"] <= 1 and 0 <= m["ece"] <= 1
    with open(tmp_path / "bench.csv", newline="") as f:
        line = next(r for r in csv.DictReader(f) if r["row_id"] == "authors-fp32")
    m = by_id["authors-fp32"]["metrics"]
    assert float(line["accuracy:scan"]) == pytest.approx(m["scan"]["accuracy"])
    assert float(line["ece"]) == pytest.approx((m["derm"]["ece"] + m["scan"]["ece"]) / 2)
    assert line["gate"] == by_id["authors-fp32"]["gate"]["verdict"]
    console = Console(record=True, width=250)
    console.print(bench_table(result))
    text = console.export_text()
    for head in ("accuracy", "macro-F1", "ECE", "gate vs torch-fp32", "reference"):
        assert head in text


def test_quality_metrics_match_an_independent_computation(tmp_path: Path):
    sklearn = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(40, 5, 3))
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)  # (N, T, C)
    labels = rng.integers(0, 3, size=40)
    labels[::7] = -1  # unscored rows are left out
    path = tmp_path / "p.npz"
    np.savez(path, derm=probs.astype(np.float32))
    got = quality_metrics(str(path), {"derm": labels})["derm"]
    keep = labels >= 0
    mean = probs.astype(np.float32).astype(np.float64)[keep].mean(axis=1)
    pred = mean.argmax(1)
    assert got["cases"] == keep.sum()
    assert got["accuracy"] == pytest.approx(sklearn.accuracy_score(labels[keep], pred))
    assert got["macro_f1"] == pytest.approx(
        sklearn.f1_score(labels[keep], pred, average="macro", zero_division=0)
    )
    # ECE by hand: 15 equal-width bins of the top probability
    conf, correct = mean.max(1), (pred == labels[keep])
    bins = np.minimum((conf * 15).astype(int), 14)  # no confidence sits exactly on an edge here
    ece = sum(abs(correct[bins == b].mean() - conf[bins == b].mean()) * (bins == b).sum() for b in set(bins))
    assert got["ece"] == pytest.approx(ece / keep.sum())


def test_rounds_pool_the_timed_calls():
    def round_result(seconds, load_s, rss):
        cell = cell_summary(30, 1, seconds)
        return {
            "row_id": "x",
            "status": "ok",
            "load_s": load_s,
            "import_s": 0.1,
            "peak_rss_mb": rss,
            "rss_after_load_mb": rss,
            "sweep": [cell],
        }

    merged = merge_rounds(
        [round_result([1.0, 2.0], 3.0, 100), round_result([4.0], 1.0, 300), round_result([3.0], 2.0, 200)]
    )
    cell = merged["sweep"][0]
    assert merged["rounds"] == 3 and cell["repeats"] == 4
    assert cell["call_ms"]["p50"] == pytest.approx(2500.0)  # median of 1, 2, 3, 4 s
    assert cell["call_ms"]["p95"] == pytest.approx(1000 * np.percentile([1, 2, 3, 4], 95))
    assert cell["cases_per_s"] == pytest.approx(1 / 2.5)
    assert merged["load_s"] == 2.0 and merged["peak_rss_mb"] == 300
    failed = {"row_id": "x", "status": "failed", "reason": "failed: killed by signal SIGSEGV"}
    row = merge_rounds([round_result([1.0], 1.0, 1), failed])
    assert row["status"] == "failed" and row["reason"].startswith("round 2 of 2: failed: killed")
