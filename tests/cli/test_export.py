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
    # the long summary goes to a file whose path is printed, not onto the screen
    assert str(out / "export-summary.json") in result.stdout.replace("\n", "")
    assert "{" not in result.stdout
    summary = json.loads((out / "export-summary.json").read_text())
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


def test_int8_set_values_are_read_as_json_or_strings():
    from drifa_edge.cli.export import _int8_overrides

    got = _int8_overrides(["bias_correction=fast", "per-channel=false", "rows_per_case=4", 'preset="mixed"'])
    assert got == {"bias_correction": "fast", "per_channel": False, "rows_per_case": 4, "preset": "mixed"}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        _int8_overrides(["bias_correction"])


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--max-drop", "0.01"], "only apply with --int8"),
        (["--int8", "--calib", "synthetic", "--int8-set", "per_channel=maybe"], "per_channel must be bool"),
        (["--int8", "--calib", "synthetic", "--int8-set", "bias=fast"], "unknown quantization config keys"),
        (["--int8", "--calib", "synthetic", "--int8-scope", "convs"], "ignored-scope policy"),
        (["--int8", "--calib", "synthetic", "--int8-backend", "onnx", "--max-drop", "0.01"], "needs NNCF"),
    ],
)
def test_int8_option_errors_name_the_option(checked_export, tmp_path, extra, match):
    import shutil

    checkpoint, out, _ = checked_export
    copy = shutil.copytree(out, tmp_path / "export")
    result = runner.invoke(app, ["export", str(checkpoint), "--out", str(copy), *extra])
    assert isinstance(result.exception, ConfigError), result.output
    assert match in str(result.exception)
    assert not (copy / "openvino-int8").exists() and not (copy / "onnx-int8").exists()


def test_int8_options_reach_the_build(checked_export, tmp_path):
    """--int8-scope / --int8-set end up in the build and in the card's provenance."""
    pytest.importorskip("nncf")
    import shutil

    from drifa_edge.artifact.card import read_card
    from drifa_edge.quantize import scopes

    checkpoint, out, _ = checked_export
    copy = shutil.copytree(out, tmp_path / "export")
    args = ["export", str(checkpoint), "--out", str(copy), "--int8", "--calib", "synthetic", "--subset", "4"]
    args += [
        "--int8-scope",
        "conv-matmul",
        "--int8-set",
        "rows_per_case=4",
        "--int8-set",
        "bias_correction=fast",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    section = read_card(copy).export["int8"]["openvino"]
    assert section["config"]["scope"] == "conv-matmul"
    assert section["config"]["bias_correction"] == "fast" and section["config"]["rows_per_case"] == 4
    assert section["calibration"]["subset"] == 4
    import openvino as ov

    suffix = ov.Core().read_model(str(copy / "openvino-int8" / "suffix.xml"))
    kinds = {k for v in scopes.ov_fake_quantize_sites(suffix).values() for k in v}
    assert kinds <= {"Convolution", "MatMul"} and "Convolution" in kinds


def test_stdout_is_only_the_json_summary(checked_export, tmp_path):
    """NNCF prints a progress bar; `drifa-edge export ... > summary.json` must still be JSON."""
    pytest.importorskip("nncf")
    import shutil
    import subprocess
    import sys

    checkpoint, out, _ = checked_export
    copy = shutil.copytree(out, tmp_path / "export")
    args = ["export", str(checkpoint), "--out", str(copy), "--int8", "--calib", "synthetic", "--json"]
    args += ["--subset", "3", "--int8-set", "rows_per_case=2"]
    code = "import sys; from drifa_edge.cli import main; sys.argv[0] = 'drifa-edge'; main()"
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout)
    assert summary["int8"]["openvino"]["calibration"]["subset"] == 3


@pytest.mark.slow  # ONNX export and INT8 calibration of four graphs: ~1 min on a shared 2-core box
def test_int8_on_a_fresh_out_exports_fp32_first_with_progress_lines_in_a_log(tiny_checkpoint, tmp_path, cli):
    """The README's `export ... --int8 --calib ...` on an empty --out: the FP32 graphs are made
    first (said so), and with stderr piped every stage prints a line, plus a repeat of the
    running stage at least every interval (1 s here, 10 s by default)."""
    pytest.importorskip("onnxruntime")
    out = tmp_path / "fresh"
    proc = cli(
        "export", tiny_checkpoint, "--out", out, "--int8", "--int8-backend", "onnx", "--no-check",
        "--calib", "synthetic", "--subset", "4", "--int8-set", "rows_per_case=2",
        env={"DRIFA_PROGRESS_INTERVAL": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "holds no FP32 export yet: exporting it first (as --onnx would)" in proc.stderr
    for line in (
        "ONNX export: prefix graph",
        "ONNX Runtime INT8: features of 4 calibration cases",
        "ONNX Runtime INT8 calibration, graph 1 of 4: prefix",
        "ONNX Runtime INT8 calibration, graph 4 of 4: suffix_masks",
    ):
        assert line in proc.stderr, proc.stderr[-3000:]
    # every line of progress starts with its elapsed time, and no escape codes reach a log
    stages = [s for s in proc.stderr.splitlines() if s.startswith("[")]
    assert stages and all(s[1:].split(" s]")[0].strip().isdigit() for s in stages)
    assert "\x1b[" not in proc.stderr and "\x1b[" not in proc.stdout
    assert (out / "onnx" / "prefix.onnx").is_file() and (out / "onnx-int8" / "suffix.onnx").is_file()
    assert proc.stdout.strip().endswith(str(out / "export-summary.json"))
