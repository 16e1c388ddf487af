"""`drifa-edge bench` from the command line, stdout piped (as in a CI log)."""

from __future__ import annotations


def test_bench_selection_matching_nothing_exits_2(tiny_checkpoint, cli):
    proc = cli("bench", str(tiny_checkpoint), "--runtimes", "openvino:fp16", "--repeats", "1")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "openvino:fp16 selects no row" in proc.stderr
    assert "openvino:int8" in proc.stderr  # names what exists
