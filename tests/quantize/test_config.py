"""QuantizeConfig validates every field and round-trips through the card."""

from __future__ import annotations

import pytest

from drifa_edge.errors import ConfigError
from drifa_edge.quantize.config import QuantizeConfig


def test_defaults_are_valid_and_round_trip():
    config = QuantizeConfig(keep_float=("a", "b"))
    assert QuantizeConfig.from_dict(config.to_dict()) == config
    assert config.to_dict()["keep_float"] == ["a", "b"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"scope": "attention-fp23"}, "Did you mean 'attention-fp32'"),
        ({"backend": "tensorrt"}, "quantization backend"),
        ({"method": "ort"}, "method for openvino"),
        ({"subset": 0}, "subset"),
        ({"rows_per_case": 0}, "rows_per_case"),
        ({"max_drop": 1.5}, "max-drop"),
        ({"scope": "sensitivity"}, "keep_float"),
        ({"backend": "onnx", "method": "ort", "masks_on_during_calibration": False}, "masks-off"),
        ({"backend": "onnx", "method": "ort", "max_drop": 0.01}, "needs NNCF"),
        ({"split": "holdout"}, "split"),
        ({"preset": "fast"}, "preset"),
    ],
)
def test_invalid_values_are_refused(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        QuantizeConfig(**kwargs)


def test_unknown_keys_are_refused():
    with pytest.raises(ConfigError, match="unknown"):
        QuantizeConfig.from_dict({"scope": "attention-fp32", "bits": 4})
