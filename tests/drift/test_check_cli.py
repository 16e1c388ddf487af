"""`drifa-edge check` end to end on tiny torch checkpoints (data loading stubbed with arrays)."""

from __future__ import annotations

import json

import pytest
from check_cli_helpers import run_check_cli as _main

from drifa_edge.drift import check as check_module
from drifa_edge.errors import ArtifactError
from drifa_edge.inference.predictor import choose_runtime
from drifa_edge.runtimes.base import probe_runtime


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


@pytest.mark.slow  # two MC drift checks: ~2.5 min on the shared 2-core box under load
def test_cli_piped_prints_plain_lines_and_stages(artifacts, stub_data, monkeypatch, capsys):
    """Off a terminal: the table is plain lines (no box, no number split) and each stage of the
    check is a line on stderr; --format json gives the report."""
    code = _main(
        monkeypatch, artifacts.reference, artifacts.identical, "--data", "stub", "--samples", 8, "--limit", 12
    )
    assert code == 0
    captured = capsys.readouterr()
    assert "\u2502" not in captured.out and "\u2500" not in captured.out
    header = next(line for line in captured.out.splitlines() if line.startswith("task"))
    assert header.split()[-1] == "verdict"
    for k in range(1, 4):
        assert f"drift check {k} of 3" in captured.err
    code = _main(
        monkeypatch, artifacts.reference, artifacts.identical, "--data", "stub", "--samples", 8,
        "--limit", 12, "--format", "json",
    )  # fmt: skip
    assert code == 0 and json.loads(capsys.readouterr().out)["verdict"] == "pass"


def _one_test(observed: float, margin: float = 0.5):
    """A criterion's evidence: a null of 999 N(0, 1) draws, the observed badness, a margin."""
    import numpy as np

    from drifa_edge.drift.criteria import CriterionTest

    null = np.random.default_rng(0).normal(0.0, 1.0, 999)
    return CriterionTest("skin", "referral_agreement", 0.0, 0.0, observed, null, margin, 200)


def test_pass_with_the_shift_beyond_the_margin_is_marked_not_significant():
    """The issue's case: a value past its limit that passes only because the test does not
    reject is 'pass (n.s.)', not a plain pass; a shift within the margin is a plain pass."""
    import numpy as np

    from drifa_edge.drift.criteria import judge
    from drifa_edge.drift.policy import DriftPolicy

    policy = DriftPolicy(decision="material", alpha=0.02)
    beyond, within, significant = judge([_one_test(1.0), _one_test(0.3), _one_test(5.0)], policy)
    null = np.random.default_rng(0).normal(0.0, 1.0, 999)
    # by hand: shift = observed - median(null); p = (1 + #{null >= observed}) / 1000
    assert beyond.shift == pytest.approx(1.0 - np.median(null))
    assert beyond.p_value == pytest.approx((1 + np.count_nonzero(null >= 1.0)) / 1000)
    assert beyond.passed and beyond.shift > 0.5 and beyond.not_significant
    assert within.passed and not within.not_significant
    assert not significant.passed and not significant.not_significant


def test_print_report_says_pass_not_significant_with_the_bounds():
    import io

    from rich.console import Console

    from drifa_edge.cli.check import print_report
    from drifa_edge.drift.criteria import judge
    from drifa_edge.drift.policy import DriftPolicy

    policy = DriftPolicy(decision="material", alpha=0.02)
    (crit,) = judge([_one_test(1.0)], policy)

    class Report:
        criteria = [crit]
        failures: list = []
        warnings: list = []
        tasks: dict = {}
        meta: dict = {}

    Report.policy = policy
    buffer = io.StringIO()
    print_report(Report(), Console(file=buffer, width=80), "plain")
    text = buffer.getvalue()
    row = next(line for line in text.splitlines() if line.startswith("skin"))
    assert row.endswith("pass (n.s.)")
    note = next(line for line in text.splitlines() if "pass (n.s.):" in line)
    assert f"[{crit.shift_low:+.4f}, {crit.shift_high:+.4f}]" in note and "margin 0.5000" in note
