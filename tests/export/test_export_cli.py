"""`drifa-edge export`: option errors are typed, a run writes a checked export."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from drifa_edge.cli import app
from drifa_edge.errors import ConfigError

runner = CliRunner()


def test_nothing_to_do_is_a_config_error(tmp_path):
    result = runner.invoke(app, ["export", str(tmp_path), "--out", str(tmp_path / "out")])
    assert isinstance(result.exception, ConfigError) and "nothing to do" in str(result.exception)


def test_int8_needs_calibration_data(tmp_path):
    result = runner.invoke(app, ["export", str(tmp_path), "--out", str(tmp_path / "o"), "--onnx", "--int8"])
    assert isinstance(result.exception, ConfigError) and "--calib" in str(result.exception)


def test_an_existing_export_is_not_overwritten(checked_export):
    checkpoint, out, _ = checked_export
    result = runner.invoke(app, ["export", str(checkpoint), "--onnx", "--out", str(out)])
    assert isinstance(result.exception, ConfigError) and "--overwrite" in str(result.exception)


def test_export_onnx_without_checks(tiny_checkpoint, tmp_path):
    pytest.importorskip("onnx")
    out = tmp_path / "out"
    result = runner.invoke(app, ["export", str(tiny_checkpoint), "--onnx", "--no-check", "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{") :])
    assert set(summary["files"]) == {
        "checks.json",
        *(f"onnx/{g}.onnx" for g in ("prefix", "suffix", "suffix_det", "suffix_masks")),
    }
    checks = json.loads((out / "checks.json").read_text())
    assert list(checks) == ["onnx"]  # onnx.checker always runs; the runtime checks were skipped


def test_overwrite_replaces_the_previous_builds(tiny_checkpoint, tmp_path):
    pytest.importorskip("onnx")
    out = tmp_path / "out"
    (out / "openvino-int8").mkdir(parents=True)
    (out / "openvino-int8" / "suffix.xml").write_text("stale")
    (out / "model_card.json").write_text("{}")
    (out / "notes.txt").write_text("the user's")
    args = ["export", str(tiny_checkpoint), "--onnx", "--no-check", "--overwrite", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert not (out / "openvino-int8").exists() and (out / "notes.txt").exists()
    assert (out / "onnx" / "suffix.onnx").is_file()
