"""The DICOM case index (serve's routing rules over an archive folder) and `predict --dicom`."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from case_index_helpers import make_archive, routes_config
from serve_helpers import TASKS, make_tiny_checkpoint

from drifa_edge.errors import ConfigError
from drifa_edge.serve.case_index import index_dicom_folder, load_assembly

pytest.importorskip("pydicom")


@pytest.fixture()
def archive(tmp_path) -> dict:
    return make_archive(tmp_path)


def test_index_routes_groups_and_chooses_like_serve(archive, tmp_path):
    index = index_dicom_folder(archive["folder"], TASKS, load_assembly(routes_config(tmp_path / "r.toml")))
    got = {c.case_id: dict(c.inputs) for c in index.cases}
    assert got == archive["cases"]  # ids as serve makes them; latest series; middle instance
    assert {k: sorted(v) for k, v in index.skipped.items()} == archive["skipped"]
    assert index.unresolved == [] and index.files == 11
    assert "3 case(s) (1 with a task missing)" in index.summary()


def test_refuse_rules_leave_the_study_unresolved(archive, tmp_path):
    cfg = routes_config(tmp_path / "r.toml", multi_series="refuse", multi_image="first")
    index = index_dicom_folder(archive["folder"], TASKS, load_assembly(cfg))
    c = archive["studies"]["C"]
    assert [(u.case_id, u.reason) for u in index.unresolved] == [(c, "ambiguous_series")]
    assert {x.case_id for x in index.cases} == {archive["studies"]["A"], archive["studies"]["B"]}


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ("[assembly]\n", "no \\[\\[assembly.routes\\]\\]"),
        ('[[assembly.routes]]\ntask = "derma"\nmodality = "OT"\n', "'derma' is not a task.*Did you mean 'derm'"),
        ('[assembly]\ngroup_by = "patient_date"\n[[assembly.routes]]\ntask = "derm"\nmodality = "OT"\n', "patient_date"),
    ],
)  # fmt: skip
def test_bad_routes_are_config_errors(archive, tmp_path, config, match):
    path = tmp_path / "bad.toml"
    path.write_text(config)
    with pytest.raises(ConfigError, match=match):
        index_dicom_folder(archive["folder"], TASKS, load_assembly(path))
    with pytest.raises(ConfigError, match="not a folder"):
        index_dicom_folder(tmp_path / "nowhere", TASKS, load_assembly(routes_config(tmp_path / "r.toml")))


def test_predict_dicom_equals_predict_on_the_same_manifest(archive, tmp_path):
    """`predict --dicom` gives the records `predict --manifest` gives for the cases the index
    should find (written by hand), the study missing a task as an error line, exit code 9."""
    from typer.testing import CliRunner

    from drifa_edge.cli import app

    ckpt = make_tiny_checkpoint(tmp_path / "ckpt")
    cfg = routes_config(tmp_path / "r.toml")
    common = ["-T", "3", "--threads", "1", "--batch-size", "1"]
    run = CliRunner().invoke(
        app,
        ["predict", str(ckpt), "--dicom", str(archive["folder"]), "--routes", str(cfg), "--out", str(tmp_path / "d.jsonl"), *common],
    )  # fmt: skip
    assert run.exit_code == 9, run.output
    manifest = tmp_path / "m.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case_id", *TASKS])
        for cid, inputs in archive["cases"].items():
            w.writerow([cid, *("" if inputs[t] is None else str(inputs[t]) for t in TASKS)])
    run2 = CliRunner().invoke(app, ["predict", str(ckpt), "--manifest", str(manifest), "--out", str(tmp_path / "m.jsonl"), *common])  # fmt: skip
    assert run2.exit_code == 9, run2.output

    def records(name: str) -> dict:
        return {r["case_id"]: r for r in map(json.loads, Path(tmp_path / name).read_text().splitlines())}

    by_index, by_manifest = records("d.jsonl"), records("m.jsonl")
    assert by_index == by_manifest
    b = archive["studies"]["B"]
    assert by_index[b]["status"] == "error" and "blood" in by_index[b]["error"]
    assert [by_index[archive["studies"][s]]["status"] for s in "AC"] == ["ok", "ok"]


def test_predict_needs_exactly_one_source_and_routes(archive, tmp_path):
    from typer.testing import CliRunner

    from drifa_edge.cli import app

    ckpt = make_tiny_checkpoint(tmp_path / "ckpt")
    run = CliRunner().invoke(app, ["predict", str(ckpt), "--dicom", str(archive["folder"])])
    assert isinstance(run.exception, ConfigError) and "--routes" in str(run.exception)  # exit 2 in main()
    run = CliRunner().invoke(
        app, ["predict", str(ckpt), "--dicom", str(archive["folder"]), "--manifest", "x.csv"]
    )
    assert isinstance(run.exception, ConfigError) and "give one of" in str(run.exception)
