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


def test_demo_refuses_unknown_steps(tmp_path):
    with pytest.raises(ConfigError, match="unknown demo steps"):
        run_demo(tmp_path / "d", steps=(*STEPS, "deploy"))


@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    result = run_demo(tmp_path / "demo", epochs=2, samples=10, log=lambda m: None)
    assert set(result.steps) == set(STEPS)
    assert result.steps["predict"]["ok"] == 4 and result.steps["predict"]["failed"] == 1
    assert (tmp_path / "demo" / "bench" / "bench.json").is_file()
    assert (tmp_path / "demo" / "check" / "report.json").is_file()
