"""The demo's built-in recipe stays the recipe documented in train/demo.toml."""

from pathlib import Path

import pytest

from drifa_edge.demo import DEMO_RECIPE, STEPS, run_demo
from drifa_edge.errors import ConfigError
from drifa_edge.training.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def test_demo_recipe_matches_train_demo_toml():
    assert load_config(ROOT / "train" / "demo.toml") == load_config(None, DEMO_RECIPE)


def test_demo_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "something").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        run_demo(tmp_path)


def test_a_second_demo_says_how_to_go_on(tmp_path):
    (tmp_path / "checkpoint").mkdir()
    with pytest.raises(ConfigError) as e:
        run_demo(tmp_path)
    for hint in ("--replace", "make clean", "OUT="):
        assert hint in str(e.value)


def test_replace_removes_only_a_folder_the_demo_wrote(tmp_path):
    from drifa_edge.demo import MARKER_FILE, _clear_output

    mine = tmp_path / "demo-out"
    (mine / "checkpoint").mkdir(parents=True)
    (mine / MARKER_FILE).write_text("")
    _clear_output(mine, replace=True)
    assert not mine.exists()
    theirs = tmp_path / "data"
    theirs.mkdir()
    (theirs / "scan.dcm").write_text("precious")
    with pytest.raises(ConfigError, match="not written by 'drifa-edge demo'"):
        _clear_output(theirs, replace=True)
    assert (theirs / "scan.dcm").read_text() == "precious"


def test_demo_refuses_unknown_steps(tmp_path):
    with pytest.raises(ConfigError, match="unknown demo steps"):
        run_demo(tmp_path / "d", steps=(*STEPS, "deploy"))


def test_zero_epochs_is_refused_before_anything_is_written(tmp_path):
    """--epochs 0 used to mean "the recipe's 15" (a falsy value silently replaced)."""
    with pytest.raises(ConfigError, match="epochs must be a positive integer, got 0"):
        run_demo(tmp_path / "out", epochs=0, steps=("train",))
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    result = run_demo(tmp_path / "demo", epochs=2, samples=10, log=lambda m: None)
    assert set(result.steps) == set(STEPS)
    assert result.steps["predict"]["ok"] == 4 and result.steps["predict"]["failed"] == 1
    assert (tmp_path / "demo" / "bench" / "bench.json").is_file()
    assert (tmp_path / "demo" / "check" / "report.json").is_file()


@pytest.mark.slow  # trains a tiny model: ~2 min on a shared 2-core box
def test_quick_demo_twice_piped(tmp_path, cli):
    """`drifa-edge demo --quick` as a newcomer's first command, run twice into the same folder
    (`make demo-quick` does so): predictions with uncertainty, progress lines in the log."""
    out = tmp_path / "quick"
    for _ in range(2):
        proc = cli("demo", "--quick", "--out", out, "--replace", timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[1/2] train" in proc.stderr and "[2/2] predict" in proc.stderr
    assert "4 ok, 1 failed" in proc.stdout
    header = next(line for line in proc.stdout.splitlines() if line.startswith("case "))
    assert header.split() == ["case", "task", "predicted", "confidence", "MI", "refer"]
    assert (out / "predictions.jsonl").is_file() and not (out / "export").exists()
