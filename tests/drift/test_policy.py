"""Drift policies: the shipped profiles load, unknown keys are refused with a suggestion."""

from __future__ import annotations

from pathlib import Path

import pytest

from drifa_edge.drift.policy import DriftPolicy, load_policy
from drifa_edge.errors import ConfigError

CALIBRATION = Path(__file__).resolve().parents[2] / "calibration"


def test_default_toml_equals_the_built_in_defaults():
    loaded = load_policy(CALIBRATION / "default.toml")
    assert {**loaded.to_dict(), "description": ""} == DriftPolicy().to_dict()


def test_strict_profile_is_stricter():
    strict = load_policy("strict-clinical")
    default = DriftPolicy()
    assert strict.name == "strict-clinical" and strict.decision == "equivalence"
    assert strict.kl_ratio_max < default.kl_ratio_max
    assert strict.accuracy_drop_max < default.accuracy_drop_max
    assert strict.referral_rate_diff_max < default.referral_rate_diff_max


def test_unknown_key_suggests(tmp_path):
    p = tmp_path / "p.toml"
    p.write_text("kl_ratio_mx = 3.0\n")
    with pytest.raises(ConfigError, match="kl_ratio_max"):
        load_policy(p)


@pytest.mark.parametrize(
    "text, match",
    [
        ("kl_ratio_max = -1\n", "kl_ratio_max"),
        ("decision = 'materiel'\n", "material"),
        ("delta_test = 'significant'\n", "decision = 'material'"),
        ("permutations = 10\n", "permutations"),
        ("accuracy_drop_max = 2\n", "fraction"),
        ("coverages = [0.9, 1.5]\n", "coverages"),
        ("alpha = 'x'\n", "alpha|not supported"),
        ("kl_ratio_max = \n", "TOML"),
    ],
)
def test_invalid_values(tmp_path, text, match):
    p = tmp_path / "p.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_policy(p)


def test_missing_profile_lists_known():
    with pytest.raises(ConfigError, match="strict-clinical"):
        load_policy("strict-clinicl")
