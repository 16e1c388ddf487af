"""CheckConfig: the frozen configuration of one drift check (no model needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from drifa_edge.drift.check import CheckConfig, check_drift_repeated
from drifa_edge.drift.policy import DriftPolicy
from drifa_edge.errors import ConfigError


def test_fields_are_normalised_and_frozen(tmp_path):
    cfg = CheckConfig(str(tmp_path / "a"), str(tmp_path / "b"), ["synthetic"], out=str(tmp_path / "o"))
    assert cfg.reference == tmp_path / "a" and isinstance(cfg.out, Path) and cfg.data == ("synthetic",)
    assert cfg.policy == DriftPolicy()
    with pytest.raises(AttributeError):
        cfg.samples = 3  # type: ignore[misc]
    assert cfg.replace(seed=4).seed == 4 and cfg.seed == 0


@pytest.mark.parametrize(
    ("changes", "match"),
    [({"samples": 0}, "samples"), ({"limit": 0}, "--limit"), ({"noise_seed_offset": 0}, "noise floor")],
)
def test_bad_values_are_refused(tmp_path, changes, match):
    with pytest.raises(ConfigError, match=match):
        CheckConfig(tmp_path, tmp_path, ("synthetic",), **changes)


def test_repeats_are_checked_before_anything_runs(tmp_path):
    cfg = CheckConfig(tmp_path, tmp_path, ("synthetic",))
    with pytest.raises(ConfigError, match="--repeats must be >= 1"):
        check_drift_repeated(cfg, 0)
    with pytest.raises(ConfigError, match="--write-card with --repeats"):
        check_drift_repeated(cfg.replace(write_candidate_card=True), 2)
