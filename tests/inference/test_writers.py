"""JSON Lines that survive a kill, and the CSV view."""

from __future__ import annotations

import csv

import pytest

from drifa_edge.errors import ConfigError
from drifa_edge.inference.writers import JsonlWriter, csv_columns, read_jsonl, rewrite_jsonl, write_csv

CLASSES = {"derm": ("nevus", "melanoma"), "blood": ("a", "b")}


def ok_record(case_id: str) -> dict:
    task = {
        "predicted": "nevus",
        "confidence": 0.7,
        "probabilities": {"nevus": 0.7, "melanoma": 0.3},
        "std": {"nevus": 0.1, "melanoma": 0.1},
        "predictive_entropy": 0.6,
        "expected_entropy": 0.5,
        "mutual_information": 0.1,
        "refer": True,
        "referral": {"metric": "mutual_information", "threshold": 0.05, "score": 0.1},
    }
    blood = dict(task, probabilities={"a": 0.5, "b": 0.5}, std={"a": 0.0, "b": 0.0}, predicted="a")
    return {"case_id": case_id, "status": "ok", "error": None, "tasks": {"derm": task, "blood": blood}}


def test_partial_last_line_is_dropped_and_cut(tmp_path):
    path = tmp_path / "p.jsonl"
    with JsonlWriter(path) as w:
        w.write(ok_record("a"))
        w.write(ok_record("b"))
    with open(path, "ab") as f:
        f.write(b'{"case_id": "c", "stat')  # a kill in the middle of a line
    records = read_jsonl(path)
    assert [r["case_id"] for r in records] == ["a", "b"]
    assert path.read_bytes().endswith(b"}\n")  # cut at the last complete line
    with JsonlWriter(path) as w:
        w.write(ok_record("c"))
    assert [r["case_id"] for r in read_jsonl(path)] == ["a", "b", "c"]


def test_corrupt_middle_line_is_refused(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"case_id": "a", "status": "ok"}\nnot json\n{"case_id": "b", "status": "ok"}\n')
    with pytest.raises(ConfigError, match="line 2"):
        read_jsonl(path)
    path.write_text('{"something": "else"}\n')
    with pytest.raises(ConfigError, match="not a drifa-edge prediction"):
        read_jsonl(path)


def test_nan_never_reaches_the_file(tmp_path):
    with JsonlWriter(tmp_path / "p.jsonl") as w, pytest.raises(ValueError):
        w.write({"case_id": "a", "status": "ok", "x": float("nan")})


def test_rewrite_and_csv_are_atomic_replacements(tmp_path):
    path = tmp_path / "p.jsonl"
    rewrite_jsonl(path, [ok_record("a"), {"case_id": "b", "status": "error", "error": "bad file"}])
    records = read_jsonl(path)
    out = tmp_path / "p.csv"
    out.write_text("old content")
    write_csv(out, records, CLASSES)
    rows = list(csv.DictReader(open(out)))
    assert list(rows[0]) == csv_columns(CLASSES)
    assert rows[0]["derm_p_melanoma"] == "0.3" and rows[0]["derm_refer"] == "True"
    assert rows[1]["status"] == "error" and rows[1]["error"] == "bad file" and rows[1]["derm_p_nevus"] == ""
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_stdout_writer(capsys):
    JsonlWriter(None).write({"case_id": "a", "status": "ok"})
    assert capsys.readouterr().out == '{"case_id":"a","status":"ok"}\n'
