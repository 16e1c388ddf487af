"""`drifa-edge train`: option checking and a tiny end-to-end run."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from drifa_edge.cli import app
from drifa_edge.errors import ConfigError

runner = CliRunner()


def _invoke(*args: str):
    return runner.invoke(app, ["train", *args])


def test_one_modality_is_refused(tmp_path):
    (tmp_path / "a").mkdir()
    result = _invoke("--data", f"a={tmp_path / 'a'}", "--out", str(tmp_path / "o"))
    assert isinstance(result.exception, ConfigError)
    assert "--data" in str(result.exception) and "2 to 4" in str(result.exception)


def test_five_modalities_are_refused(tmp_path):
    args = []
    for k in range(5):
        (tmp_path / f"m{k}").mkdir()
        args += ["--data", f"m{k}={tmp_path / f'm{k}'}"]
    result = _invoke(*args, "--out", str(tmp_path / "o"))
    assert isinstance(result.exception, ConfigError) and "got 5" in str(result.exception)


def test_unknown_pairing_names_the_choices(tmp_path):
    result = _invoke("--data", "synthetic", "--out", str(tmp_path / "o"), "--pairing", "case")
    assert isinstance(result.exception, ConfigError)
    assert "case_id" in str(result.exception)


def test_no_data_is_refused(tmp_path):
    result = _invoke("--out", str(tmp_path / "o"))
    assert isinstance(result.exception, ConfigError) and "--data" in str(result.exception)


def test_tiny_run_prints_the_test_table(tmp_path):
    pytest.importorskip("torch")
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        'description = "t"\ndata = ["synthetic"]\nimage_size = 32\nwidth = 0.125\nbatch_size = 16\n'
        "bn_momentum = 0.1\nmc_samples = 2\nthreads = 1\n"
    )
    out = tmp_path / "o"
    result = _invoke("--recipe", str(recipe), "--out", str(out), "--epochs", "1", "--quiet")
    assert result.exit_code == 0, result.output
    assert "derm" in result.output and "macro-F1" in result.output
    assert (out / "model_card.json").is_file()
    # the same run's metrics as JSON (--format json), read back against the model card
    import io
    import json

    from rich.console import Console

    from drifa_edge.artifact.card import read_card
    from drifa_edge.cli.train import print_result

    buffer = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("sys.stdout", buffer)
        print_result(out, Console(file=io.StringIO()), "json")
    printed = json.loads(buffer.getvalue())
    assert printed["out"] == str(out)
    assert printed["test"] == json.loads(json.dumps(read_card(out).metrics["test"]))


def test_a_bad_format_is_refused_before_training(tmp_path):
    result = _invoke("--data", "synthetic", "--out", str(tmp_path / "o"), "--format", "yaml")
    assert isinstance(result.exception, ConfigError) and result.exception.exit_code == 2
    assert "--format" in str(result.exception) and not (tmp_path / "o").exists()
