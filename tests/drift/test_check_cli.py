"""`drifa-edge check` end to end on tiny torch checkpoints (data loading stubbed with arrays)."""

from __future__ import annotations

import json
import sys

import pytest

from drifa_edge.drift import check as check_module
from drifa_edge.errors import ArtifactError
from drifa_edge.inference.predictor import choose_runtime
from drifa_edge.runtimes.base import probe_runtime


@pytest.fixture
def stub_data(artifacts, monkeypatch):
    def load_split(values, card, split, limit):
        images, _, labels, ids = artifacts.test if split == "test" else artifacts.val
        if limit is not None:
            return [x[:limit] for x in images], {t: y[:limit] for t, y in labels.items()}, ids[:limit]
        return images, labels, ids

    monkeypatch.setattr(check_module, "load_split", load_split)


def _main(monkeypatch, *args) -> int:
    from drifa_edge.cli import main

    monkeypatch.setattr(sys, "argv", ["drifa-edge", "check", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return exit_info.value.code


def test_cli_pass_writes_report(artifacts, stub_data, monkeypatch, tmp_path, capsys):
    out = tmp_path / "report"
    code = _main(
        monkeypatch, artifacts.reference, artifacts.identical, "--data", "stub", "--samples", 8, "--out", out
    )
    assert code == 0
    assert "PASS" in capsys.readouterr().out
    data = json.loads((out / "report.json").read_text())
    assert data["verdict"] == "pass" and data["meta"]["candidate_runtime"]["name"] == "torch"
    assert (out / "reliability_derm.png").is_file() and (out / "report.md").is_file()


def test_cli_fail_exits_8(artifacts, stub_data, monkeypatch, tmp_path, capsys):
    code = _main(
        monkeypatch,
        artifacts.reference,
        artifacts.hot,
        "--data",
        "stub",
        "--samples",
        8,
        "--policy",
        "strict-clinical",
    )
    assert code == 8
    assert "drifts beyond policy 'strict-clinical'" in capsys.readouterr().err


def test_cli_bad_policy_exits_2(artifacts, stub_data, monkeypatch):
    assert (
        _main(monkeypatch, artifacts.reference, artifacts.identical, "--data", "stub", "--policy", "nope")
        == 2
    )


def test_auto_runtime_of_check(artifacts, tmp_path):
    assert choose_runtime(artifacts.reference) == "torch"
    export = tmp_path / "export"
    (export / "openvino-int8").mkdir(parents=True)
    (export / "model_card.json").write_text((artifacts.reference / "model_card.json").read_text())
    expected = "openvino" if probe_runtime("openvino").get("available") else None
    if expected:
        assert choose_runtime(export, "auto", "int8") == "openvino"
    with pytest.raises(ArtifactError, match="neither a checkpoint"):
        choose_runtime(export, "auto", "fp32")


def test_recalibrate_and_write_card(artifacts, stub_data, tmp_path):
    import shutil

    from drifa_edge.artifact.card import read_card

    candidate = tmp_path / "hot"
    shutil.copytree(artifacts.hot, candidate)
    report = check_module.run_check(
        artifacts.reference, candidate, ["stub"], samples=8, recalibrate=True, write_candidate_card=True
    )
    card = read_card(candidate)  # still verifies: the weights' hashes are untouched
    for task, r in report.meta["recalibration"].items():
        assert card.temperature_of(task) == pytest.approx(r["temperature_after"])
        assert card.referral[task].threshold == pytest.approx(r["threshold_after"])
        assert r["ece_after"] < r["ece_before"]
    assert report.meta["candidate_card_written"] == [str(candidate)]
