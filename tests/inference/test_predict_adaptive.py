"""`predict --adaptive`: records say how many draws each case used and why it stopped,
the numbers are those of its used draws, resume refuses to mix fixed and adaptive T, and
the CLI options are validated."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from inference_helpers import write_good_case, write_manifest

from drifa_edge.errors import ConfigError
from drifa_edge.inference.adaptive import AdaptiveConfig
from drifa_edge.inference.engine import EngineConfig
from drifa_edge.inference.manifest import read_manifest
from drifa_edge.inference.predict import predict_cases
from drifa_edge.inference.writers import read_jsonl
from drifa_edge.runtimes.base import RuntimeOptions

pytest.importorskip("torch")

TASKS = ("derm", "blood")
ADAPTIVE = AdaptiveConfig(min_samples=4, block=3, error_rate=0.2)
OPTIONS = RuntimeOptions(threads=1)


def _manifest(folder, n):
    rows = []
    for i in range(n):
        d, b = write_good_case(folder, f"g{i}", seed=i)
        rows.append((f"g{i}", d.name, b.name))
    return write_manifest(folder / "cases.csv", rows)


def test_adaptive_records_and_resume(checkpoint, tmp_path):
    cases = read_manifest(_manifest(tmp_path, 4), TASKS)
    out = tmp_path / "p.csv"
    cfg = EngineConfig(samples=10, seed=0, adaptive=ADAPTIVE)
    summary = predict_cases(checkpoint, cases, out, options=OPTIONS, engine_cfg=cfg, fmt="csv")
    assert summary.ok == 4
    records = read_jsonl(out.with_suffix(".jsonl"))
    for r in records:
        assert r["mc_samples_used"] in ADAPTIVE.looks(10)
        assert r["mc_stop"] == ("max_samples" if r["mc_samples_used"] == 10 else "settled")
        assert r["samples"] == 10 and r["adaptive"] == ADAPTIVE.to_dict()
        for task in r["tasks"].values():  # the referral is decided on the reported (plug-in) score
            if task["refer"] is not None and task["referral"]["reason"] == "uncertainty":
                assert task["referral"]["score"] > task["referral"]["threshold"]
    assert "mc_samples_used" in out.read_text().splitlines()[0].split(",")
    # fixed T cannot resume an adaptive file, nor another adaptive setting
    with pytest.raises(ConfigError, match="adaptive T"):
        predict_cases(checkpoint, cases, out, options=OPTIONS, engine_cfg=cfg.replace(adaptive=None),
                      fmt="csv", resume=True)  # fmt: skip
    other = cfg.replace(adaptive=ADAPTIVE.replace(error_rate=0.1))
    with pytest.raises(ConfigError, match="adaptive T"):
        predict_cases(checkpoint, cases, out, options=OPTIONS, engine_cfg=other, fmt="csv", resume=True)
    assert (
        predict_cases(checkpoint, cases, out, options=OPTIONS, engine_cfg=cfg, fmt="csv", resume=True).skipped
        == 4
    )


def test_adaptive_record_numbers_are_those_of_the_used_draws(checkpoint, tmp_path):
    """Seeded torch: the adaptive case's numbers equal a fixed-T run over the same draws,
    recomputed here from run_adaptive's logits (an independent summarize of them)."""
    from drifa_edge.inference.predictor import Predictor
    from drifa_edge.metrics.uncertainty import summarize

    cases = read_manifest(_manifest(tmp_path, 2), TASKS)
    cfg = EngineConfig(samples=10, seed=0, adaptive=ADAPTIVE)
    with Predictor.open(checkpoint, options=OPTIONS, engine_cfg=cfg) as predictor:
        records = predictor.predict(cases)
        seen = {}

        import drifa_edge.inference.predictor as module

        original = module.run_adaptive

        def spy(*args, **kwargs):
            seen["run"] = original(*args, **kwargs)
            return seen["run"]

        module.run_adaptive = spy
        try:
            again = predictor.predict(cases)
        finally:
            module.run_adaptive = original
    assert [r["case_id"] for r in records] == [r["case_id"] for r in again]  # same seeds, same records
    assert records[0]["tasks"] == again[0]["tasks"]
    run = seen["run"]
    for i, r in enumerate(again):
        n = r["mc_samples_used"]
        for task, result in r["tasks"].items():
            z = run.logits[task][i, 0, :n].astype(np.float64) / run.temperatures[task][0]
            p = np.exp(z - z.max(axis=-1, keepdims=True))
            p /= p.sum(axis=-1, keepdims=True)
            s = summarize(p[None])
            assert result["mutual_information"] == pytest.approx(
                float(s["mutual_information"][0]), rel=1e-5, abs=1e-9
            )


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--min-samples", "1"], "min_samples"),
        (["--samples", "3"], "below the adaptive T_min"),
        (["--stop-rule", "fastest"], "adaptive rule must be one of"),
        (["--error-rate", "2"], "error_rate"),
    ],
)
def test_cli_refuses_bad_adaptive_options(checkpoint, tmp_path, monkeypatch, capsys, extra, message):
    from drifa_edge.cli import main

    d, b = write_good_case(tmp_path, "c", seed=0)
    argv = ["drifa-edge", "predict", str(checkpoint), "--input", f"derm={d}", "--input", f"blood={b}"]
    monkeypatch.setattr(sys, "argv", [*argv, "--adaptive", *extra])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    assert message in " ".join(capsys.readouterr().err.split())
