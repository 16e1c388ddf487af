"""Manifests and --input pairs."""

from __future__ import annotations

from pathlib import Path

import pytest

from drifa_edge.errors import ConfigError
from drifa_edge.inference.manifest import Case, parse_inputs, read_manifest

TASKS = ("derm", "blood")


def test_manifest_resolves_relative_paths_and_keeps_order(tmp_path):
    sub = tmp_path / "study"
    sub.mkdir()
    m = sub / "cases.csv"
    m.write_text("\ufeffcase_id,blood,derm,label\nb,x/1.npy,/abs/d.png,mel\na,2.npy,,nev\n")  # BOM, any order
    cases = read_manifest(m, TASKS)
    assert [c.case_id for c in cases] == ["b", "a"]
    assert cases[0].inputs == {"derm": Path("/abs/d.png"), "blood": sub.resolve() / "x/1.npy"}
    assert cases[1].inputs["derm"] is None and cases[1].missing(TASKS) == ["derm"]


@pytest.mark.parametrize(
    "text, match",
    [
        ("case_id,derm,bloood\nc,a.png,b.png\n", "no column 'blood'.*Did you mean 'bloood'"),
        ("id,derm,blood\nc,a.png,b.png\n", "no column 'case_id'"),
        ("case_id,derm,blood\n", "no cases"),
        ("case_id,derm,blood\nc,a,b\nc,d,e\n", "lines 2 and 3"),
        ("case_id,derm,blood\n,a,b\n", "line 2: empty case_id"),
    ],
    ids=["typo", "no-id", "empty", "duplicate", "empty-id"],
)
def test_manifest_errors_name_the_problem(tmp_path, text, match):
    m = tmp_path / "m.csv"
    m.write_text(text)
    with pytest.raises(ConfigError, match=match):
        read_manifest(m, TASKS)


def test_missing_manifest(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        read_manifest(tmp_path / "nope.csv", TASKS)


def test_parse_inputs():
    case = parse_inputs(["derm=a/x.png", "blood = y.npy"], TASKS)
    assert case == Case("x", {"derm": Path("a/x.png"), "blood": Path("y.npy")})
    assert parse_inputs(["blood=y.npy"], TASKS, case_id="p1").missing(TASKS) == ["derm"]
    for bad, match in [
        (["derm"], "TASK=PATH"),
        (["dermo=a.png"], "Did you mean 'derm'"),
        (["derm=a.png", "derm=b.png"], "twice"),
        ([], "no inputs"),
    ]:
        with pytest.raises(ConfigError, match=match):
            parse_inputs(bad, TASKS)
