"""The extras: a scanner PC installs only a runtime; [all] stays complete."""

from __future__ import annotations

import re
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
EXTRAS = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\[<>=~!; ]", r, maxsplit=1)[0].lower() for r in requirements}


def _expanded(extra: str) -> set[str]:
    names = set()
    for req in EXTRAS[extra]:
        nested = re.fullmatch(r"drifa-edge\[(.+)\]", req)
        if nested:
            for sub in nested.group(1).split(","):
                names |= _expanded(sub.strip())
        else:
            names |= _names([req])
    return names


def test_runtime_extras_pull_no_quantizer_and_no_torch():
    for runtime in ("openvino", "onnx"):
        heavy = _expanded(runtime) & {"nncf", "torch", "scipy", "scikit-learn", "onnx"} - (
            {"onnx"} if runtime == "onnx" else set()
        )
        assert not heavy, f"[{runtime}] pulls {heavy}: a scanner PC would install them"
    assert _expanded("openvino") == {"openvino"}


def test_quantize_extra_has_nncf_and_all_is_complete():
    assert {"nncf", "openvino"} <= _expanded("quantize")
    everything = _expanded("all")
    for extra in (
        "torch",
        "onnx",
        "openvino",
        "quantize",
        "dicom",
        "tiff",
        "check",
        "tensorrt-prepare",
        "serve",
    ):
        assert _expanded(extra) <= everything, f"[all] lacks [{extra}]"
