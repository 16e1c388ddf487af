"""``quantize_int8``: the INT8 backend dispatch of ``drifa-edge export --int8`` (no build here)."""

from __future__ import annotations

import pytest

from drifa_edge.errors import ConfigError
from drifa_edge.quantize import INT8_BACKENDS, QUANTIZERS, quantize_int8, quantizer


def test_every_backend_choice_names_registered_builders():
    for builds in INT8_BACKENDS.values():
        assert set(builds) <= set(QUANTIZERS)


def test_unknown_backend_and_max_drop_without_nncf_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="Did you mean 'onnx'"):
        quantize_int8(tmp_path, ["synthetic"], "onxx")
    with pytest.raises(ConfigError, match="needs NNCF"):
        quantize_int8(tmp_path, ["synthetic"], "onnx", max_drop=0.01)


def test_the_dispatch_calls_each_builder_with_its_config(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(
        "drifa_edge.quantize.quantizer",
        lambda backend, method: (
            lambda out, calib, cfg: calls.append((backend, method, cfg)) or {"b": backend}
        ),
    )
    summary = quantize_int8(tmp_path, ["synthetic"], "both", subset=7, max_drop=0.02)
    assert summary == {"openvino": {"b": "openvino"}, "onnx": {"b": "onnx"}}
    (ov, ov_method, ov_cfg), (ox, ox_method, ox_cfg) = calls
    assert (ov, ov_method, ox, ox_method) == ("openvino", "nncf", "onnx", "ort")
    assert ov_cfg.max_drop == 0.02 and ox_cfg.max_drop is None and ov_cfg.subset == ox_cfg.subset == 7


def test_quantizer_resolves_the_table():
    pytest.importorskip("onnxruntime")
    from drifa_edge.quantize.onnxrt import quantize_onnx

    assert quantizer("onnx", "ort") is quantize_onnx
