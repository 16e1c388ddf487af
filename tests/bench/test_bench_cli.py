"""`drifa-edge bench` from the command line, stdout piped (as in a CI log)."""

from __future__ import annotations


def test_bench_selection_matching_nothing_exits_2(tiny_checkpoint, cli):
    proc = cli("bench", str(tiny_checkpoint), "--runtimes", "openvino:fp16", "--repeats", "1")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "openvino:fp16 selects no row" in proc.stderr
    assert "openvino:int8" in proc.stderr  # names what exists


def test_bench_piped_prints_rows_as_they_start_and_a_plain_table(tiny_checkpoint, cli, tmp_path):
    proc = cli(
        "bench", tiny_checkpoint, "--runtimes", "torch", "--samples", "2", "--repeats", "1",
        "--warmup", "0", "--min-repeats", "1", "--threads", "1", "--out", tmp_path / "b",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "row 1 of 1: torch-fp32" in proc.stderr
    assert "torch-fp32: ok" in proc.stderr
    lines = proc.stdout.splitlines()
    row = next(line for line in lines if line.startswith("torch "))
    assert "│" not in proc.stdout and "─" not in proc.stdout
    assert len(row.split()) >= 11  # every column of the row on its one line, numbers whole
    proc = cli(
        "bench", tiny_checkpoint, "--runtimes", "torch", "--samples", "2", "--repeats", "1",
        "--warmup", "0", "--min-repeats", "1", "--threads", "1", "--format", "json",
    )  # fmt: skip
    import json

    assert proc.returncode == 0 and json.loads(proc.stdout)["rows"][0]["row_id"] == "torch-fp32"
