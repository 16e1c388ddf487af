"""The public API: lazy top-level entry points and ``drifa_edge.model``'s exports."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import pytest

import drifa_edge


def test_every_top_level_name_resolves_to_what_its_module_defines():
    for name, module in drifa_edge._LAZY.items():
        assert getattr(drifa_edge, name) is getattr(importlib.import_module(module), name), name
    assert set(drifa_edge._LAZY) <= set(dir(drifa_edge))


def test_no_top_level_name_shadows_a_subpackage_or_module():
    submodules = {m.name for m in pkgutil.iter_modules(drifa_edge.__path__)}
    assert {"export", "bench", "drift", "metrics"} <= submodules
    assert not set(drifa_edge._LAZY) & submodules


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        drifa_edge.nope  # noqa: B018


def test_importing_the_package_and_the_model_config_loads_no_heavy_module():
    code = (
        "import sys, drifa_edge\n"
        "from drifa_edge.model import ModelConfig, TaskSpec\n"
        "drifa_edge.run_check, drifa_edge.Predictor, drifa_edge.quantize_int8\n"
        "print(sorted(m for m in ('torch', 'onnxruntime', 'openvino', 'nncf') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_model_exports_the_network_and_its_config():
    pytest.importorskip("torch")
    from drifa_edge.model import DrifaNet, ModelConfig, TaskSpec, build_model
    from drifa_edge.model.drifa import DrifaNet as defined

    assert DrifaNet is defined
    cfg = ModelConfig(
        tasks=(TaskSpec("a", ("x", "y")), TaskSpec("b", ("p", "q"), 1)), image_size=32, width=0.125
    )
    assert isinstance(build_model(cfg), DrifaNet)
