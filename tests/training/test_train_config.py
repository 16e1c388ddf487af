"""TrainConfig validation, loss weights, TOML recipes and overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from drifa_edge.errors import ConfigError
from drifa_edge.training.config import TrainConfig, load_config, read_recipe

RECIPES = sorted((Path(__file__).resolve().parents[2] / "train").glob("*.toml"))


def test_defaults_are_the_authors_recipe():
    cfg = TrainConfig()
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.image_size, cfg.width, cfg.dropout) == (
        200,
        32,
        1e-3,
        128,
        1.0,
        0.25,
    )
    assert (cfg.plateau_factor, cfg.plateau_patience, cfg.min_lr) == (0.2, 5, 1e-5)
    assert cfg.loss_weights(2) == (0.5, 0.5)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"epochs": 0}, "epochs"),
        ({"epochs": 2.5}, "epochs"),
        ({"batch_size": 1}, "batch_size"),
        ({"lr": 0.0}, "lr"),
        ({"image_size": 100}, "image_size"),
        ({"width": 0}, "width"),
        ({"dropout": 1.0}, "dropout"),
        ({"seed": -1}, "seed"),
        ({"bn_momentum": 0.0}, "bn_momentum"),
        ({"gamma": 1.0}, "gamma"),
        ({"gamma": 0.5, "task_weights": (1.0, 1.0)}, "either gamma"),
        ({"task_weights": (1.0, -1.0)}, "task_weights"),
        ({"plateau_factor": 1.0}, "plateau_factor"),
        ({"plateau_patience": 0}, "plateau_patience"),
        ({"min_lr": 0}, "min_lr"),
        ({"early_stopping_patience": 0}, "early_stopping_patience"),
        ({"ensemble": 0}, "ensemble"),
        ({"pairing": "case"}, "Did you mean 'case_id'"),
        ({"augment": "yes"}, "augment"),
        ({"normalize": "imagenet"}, "normalize"),
        ({"channels": {"a": 2}}, "channels"),
        ({"referral_rate": 1.0}, "referral_rate"),
        ({"mc_samples": 0}, "mc_samples"),
        ({"max_train_pairs": 1}, "max_train_pairs"),
        ({"threads": 0}, "threads"),
    ],
)
def test_invalid_values_name_the_option(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        TrainConfig(**kwargs)


def test_loss_weights():
    assert TrainConfig(gamma=0.3).loss_weights(2) == (0.3, 0.7)
    assert TrainConfig().loss_weights(3) == pytest.approx((1 / 3,) * 3)
    assert TrainConfig(task_weights=(1.0, 2.0, 1.0)).loss_weights(3) == (1.0, 2.0, 1.0)
    with pytest.raises(ConfigError, match="exactly two tasks"):
        TrainConfig(gamma=0.3).loss_weights(3)
    with pytest.raises(ConfigError, match="3 tasks"):
        TrainConfig(task_weights=(1.0, 1.0)).loss_weights(3)


def test_dict_round_trip_and_unknown_keys():
    cfg = TrainConfig(epochs=3, task_weights=(1.0, 2.0), channels={"a": 1})
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="Did you mean 'epochs'"):
        TrainConfig.from_dict({"epoch": 3})


def test_recipe_then_overrides(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('data = ["synthetic"]\ndescription = "x"\nepochs = 7\nwidth = 0.5\npairing = "index"\n')
    cfg = load_config(recipe, {"epochs": 3, "seed": None})
    assert (cfg.epochs, cfg.width, cfg.seed) == (3, 0.5, 0)  # override wins, None means "not given"
    assert read_recipe(recipe)["data"] == ["synthetic"]


def test_bad_recipes(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("epochs = = 3\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    typo = tmp_path / "typo.toml"
    typo.write_text("learning_rate = 0.1\n")
    with pytest.raises(ConfigError, match="unknown training option 'learning_rate'"):
        load_config(typo)


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.stem for r in RECIPES])
def test_shipped_recipes_load(recipe):
    cfg = load_config(recipe)
    raw = read_recipe(recipe)
    assert "description" in raw
    if "data" in raw:
        assert all(d == "synthetic" or "=" in d for d in raw["data"])
    assert cfg.loss_weights(2)


def test_paper_recipe_matches_the_notebook():
    recipe = [r for r in RECIPES if r.stem == "paper"]
    assert recipe, "train/paper.toml is missing"
    cfg = load_config(recipe[0])
    assert (cfg.image_size, cfg.width, cfg.epochs, cfg.batch_size, cfg.lr) == (128, 1.0, 200, 32, 1e-3)
    assert (cfg.early_stopping_patience, cfg.loss_weights(2), cfg.bn_momentum) == (100, (0.5, 0.5), 0.01)
