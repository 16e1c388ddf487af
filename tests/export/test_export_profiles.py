"""The shipped target profiles (export/*.toml) load into engine and runtime settings."""

from __future__ import annotations

import pytest

from drifa_edge.errors import ConfigError
from drifa_edge.export.tensorrt import load_profile
from drifa_edge.inference.targets import load_target
from drifa_edge.profiles import profile_file, profile_names, toml_loads
from drifa_edge.runtimes.base import PRECISIONS

NAMES = profile_names("export")


def test_the_three_targets_ship():
    assert {"intel-cpu", "desktop-cuda", "jetson-orin"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_every_section_loads_into_the_settings_it_names(name):
    raw = toml_loads(profile_file("export", name).read_text())  # the file itself, independently
    target = load_target(name)
    engine = target.engine_config(seed=0)
    assert (engine.samples, engine.max_rows) == (raw["engine"]["samples"], raw["engine"]["max_rows"])
    if "tensorrt" in raw:
        assert engine.max_rows <= load_profile(name).rows_max
    for runtime in ("openvino", "onnxruntime"):
        section = raw.get(runtime)
        if section is None:
            assert runtime not in target.runtimes
            continue
        assert set(section.get("precisions", [])) <= set(PRECISIONS)
        for precision in section.get("precisions", ["fp32"]):
            options = target.runtime_options(runtime, precision, threads=1)
            assert options.precision == precision and options.threads == 1
            assert options.device == section.get("device")
            assert options.hint == section.get("hint", "latency")
            assert bool(options.extra.get("cache_dir")) == ("cache_dir" in section)


def test_a_key_nothing_reads_is_refused(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text(
        '[engine]\nsamples = 30\nmax_rows = 32\n\n[openvino]\ndevice = "CPU"\ninference_precison = 1\n'
    )
    with pytest.raises(ConfigError, match="unknown key 'inference_precison'"):
        load_target(path)
    path.write_text("[engin]\nsamples = 30\n")
    with pytest.raises(ConfigError, match="Did you mean 'engine'"):
        load_target(path)


def test_a_precision_the_target_does_not_list_is_refused():
    with pytest.raises(ConfigError, match="lists precisions"):
        load_target("jetson-orin").runtime_options("onnxruntime", "int8")
