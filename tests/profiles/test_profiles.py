"""The profiles shipped as package data: the repository copies match them, each one loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from drifa_edge.drift.policy import load_policy
from drifa_edge.errors import ConfigError
from drifa_edge.export.tensorrt import load_profile
from drifa_edge.profiles import KINDS, profile_file, profile_names, read_toml, toml_loads
from drifa_edge.training.config import load_config, read_recipe

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("kind", KINDS)
def test_repository_copies_match_the_package_data(kind):
    repo = {p.stem: p.read_bytes() for p in (REPO / kind).glob("*.toml")}
    shipped = {name: profile_file(kind, name).read_bytes() for name in profile_names(kind)}
    assert sorted(repo) == sorted(shipped), f"{kind}/ and drifa_edge/profiles/{kind}/ list different files"
    for name in repo:
        assert repo[name] == shipped[name], (
            f"{kind}/{name}.toml differs from drifa_edge/profiles/{kind}/{name}.toml; "
            "edit the package copy and copy it over"
        )


def test_named_profiles_load_from_the_package(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing found beside the working directory
    assert load_policy("strict-clinical").name == "strict-clinical"
    assert load_policy("default").name == "default"
    assert load_profile("desktop-cuda").target == "desktop-cuda"
    assert read_recipe("demo")["data"] == ["synthetic"]
    assert load_config("demo").image_size == 64


def test_unknown_names_list_the_shipped_ones():
    with pytest.raises(ConfigError, match="strict-clinical"):
        load_policy("strict-clinicl")
    with pytest.raises(ConfigError, match="jetson-orin"):
        load_profile("jetson-orn")
    with pytest.raises(ConfigError, match="demo"):
        read_recipe("dem")


def test_a_path_never_resolves_to_a_shipped_profile():
    assert profile_file("calibration", "../export/desktop-cuda") is None
    assert profile_file("calibration", "default.toml") is None


def test_one_toml_reader(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("x = [")
    with pytest.raises(ConfigError, match="bad.toml: not valid TOML"):
        read_toml(bad)
    assert toml_loads("a = 1") == {"a": 1}
