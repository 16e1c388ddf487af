"""The shipped target profiles (export/*.toml) agree with the runtimes and the engine."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from drifa_edge.runtimes.base import PRECISIONS, RuntimeOptions

tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")
PROFILES = sorted((Path(__file__).resolve().parents[2] / "export").glob("*.toml"))


def test_the_three_targets_ship():
    assert {"intel-cpu", "desktop-cuda", "jetson-orin"} <= {p.stem for p in PROFILES}


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.stem)
def test_profile_sections_are_consistent(path):
    profile = tomllib.loads(path.read_text())
    engine = profile["engine"]
    assert engine["samples"] >= 1 and engine["max_rows"] >= 1
    if "tensorrt" in profile:
        assert engine["max_rows"] <= profile["tensorrt"]["rows_max"]
    for runtime in ("openvino", "onnxruntime"):
        section = profile.get(runtime, {})
        assert set(section.get("precisions", [])) <= set(PRECISIONS)
        RuntimeOptions(device=section.get("device"), hint=section.get("hint", "latency"))  # validates
    hints = profile.get("openvino", {}).get("inference_precision", {})
    assert set(hints) <= set(PRECISIONS) and set(hints.values()) <= {"f32", "bf16", "f16"}
