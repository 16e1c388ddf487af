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


def test_majority_rule():
    from drifa_edge.errors import BadInputError

    assert check_module.majority_passed([True, False, True])
    assert not check_module.majority_passed([True, False])  # a tie fails
    assert not check_module.majority_passed([False, False, True])
    assert check_module.majority_passed([True])
    with pytest.raises(BadInputError):
        check_module.majority_passed([])


def test_cli_repeats_pass_writes_one_report_per_run(artifacts, stub_data, monkeypatch, tmp_path, capsys):
    out = tmp_path / "report"
    code = _main(
        monkeypatch, artifacts.reference, artifacts.identical, "--data", "stub", "--samples", 8,
        "--repeats", 3, "--seed", 5, "--out", out,
    )  # fmt: skip
    assert code == 0
    assert "3 of 3 runs" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["verdict"] == "pass" and summary["passed_runs"] == 3
    assert [r["seed"] for r in summary["runs"]] == [5, 6, 7]
    seeds = [json.loads((out / f"repeat-{k}" / "report.json").read_text())["meta"]["seed"] for k in range(3)]
    assert seeds == [5, 6, 7]  # each run its own draws


def test_cli_repeats_fail_exits_8(artifacts, stub_data, monkeypatch, tmp_path, capsys):
    code = _main(
        monkeypatch, artifacts.reference, artifacts.hot, "--data", "stub", "--samples", 8,
        "--policy", "strict-clinical", "--repeats", 2, "--json",
    )  # fmt: skip
    assert code == 8
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert data["verdict"] == "fail" and data["passed_runs"] == 0 and len(data["runs"]) == 2
    assert "0 of 2 runs passed" in captured.err


def test_repeats_refuse_writing_the_card_each_time(artifacts, stub_data, tmp_path):
    from drifa_edge.errors import ConfigError

    with pytest.raises(ConfigError, match="--write-card"):
        check_module.run_check_repeated(
            artifacts.reference, artifacts.identical, ["stub"], 2, write_candidate_card=True, recalibrate=True
        )
    with pytest.raises(ConfigError, match="--repeats"):
        check_module.run_check_repeated(artifacts.reference, artifacts.identical, ["stub"], 0)


@pytest.mark.slow  # two MC drift checks: ~2.5 min on the shared 2-core box under load
def test_cli_piped_prints_plain_lines_and_stages(artifacts, stub_data, monkeypatch, capsys):
    """Off a terminal: the table is plain lines (no box, no number split) and each stage of the
    check is a line on stderr; --format json gives the report."""
    code = _main(
        monkeypatch, artifacts.reference, artifacts.identical, "--data", "stub", "--samples", 8, "--limit", 12
    )
    assert code == 0
    captured = capsys.readouterr()
    assert "│" not in captured.out and "─" not in captured.out
    header = next(line for line in captured.out.splitlines() if line.startswith("task"))
    assert header.split()[-1] == "verdict"
    for k in range(1, 5):
        assert f"drift check {k} of 4" in captured.err
    code = _main(
        monkeypatch,
        artifacts.reference,
        artifacts.identical,
        "--data",
        "stub",
        "--samples",
        8,
        "--format",
        "json",
    )
    assert code == 0 and json.loads(capsys.readouterr().out)["verdict"] == "pass"


def test_pass_only_because_the_interval_includes_zero_says_so():
    import io

    from rich.console import Console

    from drifa_edge.cli.check import print_report
    from drifa_edge.drift.criteria import Criterion, beyond_tolerance, judge
    from drifa_edge.drift.stats import BootstrapInterval

    # the case: agreement 0.9407 against 0.9461, difference -0.0154 with a CI over 0
    ci = BootstrapInterval(estimate=-0.0154, low=-0.041, high=0.009, level=0.95)
    passed, _ = judge(ci, 0.01, True, "significant")
    assert passed and beyond_tolerance(ci, 0.01, True)
    assert not beyond_tolerance(BootstrapInterval(-0.004, -0.02, 0.01, 0.95), 0.01, True)
    crit = Criterion(
        "skin", "referral_agreement", 0.9407, 0.9461, passed, 0.9561, interval=ci, not_significant=True
    )

    class Report:
        criteria = [crit]
        failures: list = []
        meta: dict = {}

    buffer = io.StringIO()
    print_report(Report(), Console(file=buffer, width=80), "plain")
    text = buffer.getvalue()
    row = next(line for line in text.splitlines() if line.startswith("skin"))
    assert row.endswith("pass (n.s.)")
    assert "95% interval of the difference [-0.0410, +0.0090] includes 0" in text
