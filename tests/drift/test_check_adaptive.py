"""`drifa-edge check --adaptive`: an adaptive-T candidate judged against a fixed-T reference,
and the gate's ``cand_used`` against independent computations on truncated draws."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from check_cli_helpers import run_check_cli as _main

from drifa_edge.artifact.card import default_card
from drifa_edge.drift import check as check_module
from drifa_edge.drift.gate import evaluate_drift
from drifa_edge.drift.policy import DriftPolicy
from drifa_edge.metrics import task_metrics
from drifa_edge.model.config import ModelConfig, TaskSpec


def test_check_adaptive_needs_thresholds_then_reports_its_draws(
    artifacts, stub_data, monkeypatch, tmp_path, capsys
):
    candidate = tmp_path / "candidate"
    shutil.copytree(artifacts.identical, candidate)
    adaptive = ("--adaptive", "--samples", 10, "--min-samples", 4, "--block", 3, "--limit", 40)
    assert _main(monkeypatch, artifacts.reference, candidate, "--data", "stub", *adaptive) == 2
    assert "no referral threshold" in capsys.readouterr().err
    # the documented order: recalibrate (writes thresholds into the card), then check --adaptive
    check_module.run_check(
        artifacts.reference, candidate, ["stub"], samples=10, recalibrate=True, write_candidate_card=True,
        limit=40,
    )  # fmt: skip
    out = tmp_path / "report"
    code = _main(monkeypatch, artifacts.reference, candidate, "--data", "stub", *adaptive, "--out", out)
    printed = capsys.readouterr().out
    # the verdict on this 40-case toy model is not the point (exit 8 = a criterion failed);
    # the report and its adaptive-T record are
    assert code in (0, 8), printed
    assert "adaptive T: mean" in printed
    report = json.loads((out / "report.json").read_text())
    meta = report["meta"]["adaptive"]
    assert meta["config"]["min_samples"] == 4 and meta["max_samples"] == 10
    assert sum(meta["histogram"].values()) == 40
    assert set(meta["histogram"]) <= {"4", "7", "10"}
    assert 4 <= meta["mean_samples"] <= 10 and meta["row_ratio"] == pytest.approx(10 / meta["mean_samples"])
    assert report["meta"]["shared_masks"] is False


def test_adaptive_and_recalibrate_are_refused_together(artifacts):
    from drifa_edge.errors import ConfigError
    from drifa_edge.inference.adaptive import AdaptiveConfig

    with pytest.raises(ConfigError, match="recalibrate"):
        check_module.CheckConfig(
            artifacts.reference, artifacts.identical, ("stub",), recalibrate=True, adaptive=AdaptiveConfig()
        )


def _draws(rng, cases, draws, classes, spread):
    z = rng.normal(0, 1.5, (cases, 1, classes)) + spread * rng.standard_normal((cases, draws, classes))
    p = np.exp(z - z.max(axis=-1, keepdims=True))
    return p / p.sum(axis=-1, keepdims=True)


def test_gate_judges_the_adaptive_draws_and_nulls_on_full_runs():
    """cand_used = T changes nothing; cand_used = 4 makes the candidate's metrics those of
    its first 4 draws (computed here on the truncated array), while the null stays the
    swap of the two full runs."""
    pytest.importorskip("scipy")
    rng = np.random.default_rng(0)
    n, T, classes = 80, 12, 3
    ref = {t: _draws(rng, n, T, classes, 0.7) for t in ("t", "u")}
    cand = {t: _draws(rng, n, T, classes, 0.7) for t in ("t", "u")}
    labels = {t: rng.integers(0, classes, n) for t in ("t", "u")}
    tasks = tuple(TaskSpec(t, ("a", "b", "c")) for t in ("t", "u"))
    card = default_card(ModelConfig(tasks=tasks, image_size=32, width=0.125))
    policy = DriftPolicy(permutations=99)
    plain = evaluate_drift(ref, cand, labels, card, card, policy)
    full = evaluate_drift(ref, cand, labels, card, card, policy, cand_used=np.full(n, T))
    for task in ("t", "u"):  # the same up to float round-off (a masked mean against np.mean)
        for key in ("accuracy", "ece", "mean_mutual_information", "referral_rate"):
            assert full.tasks[task].candidate[key] == pytest.approx(
                plain.tasks[task].candidate[key], abs=1e-12
            )
        assert [c.name for c in full.tasks[task].criteria] == [c.name for c in plain.tasks[task].criteria]
        assert [c.value for c in full.tasks[task].criteria] == pytest.approx(
            [c.value for c in plain.tasks[task].criteria], abs=1e-9
        )
    four = evaluate_drift(ref, cand, labels, card, card, policy, cand_used=np.full(n, 4))
    expected = task_metrics(cand["t"][:, :4], labels["t"], float("inf"))
    assert four.tasks["t"].candidate["accuracy"] == pytest.approx(expected["accuracy"])
    assert four.tasks["t"].candidate["ece"] == pytest.approx(expected["ece"])
    assert four.tasks["t"].candidate["mean_mutual_information"] == pytest.approx(
        expected["mean_mutual_information"]
    )
    assert four.tasks["t"].noise == full.tasks["t"].noise  # the null: two full runs either way
