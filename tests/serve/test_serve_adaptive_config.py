"""The service's adaptive-T keys ([inference] adaptive_*) and what they build."""

from __future__ import annotations

import pytest

from drifa_edge.errors import ConfigError
from drifa_edge.inference.adaptive import AdaptiveConfig
from drifa_edge.serve.config import InferenceConfig


def test_adaptive_keys_build_the_engine_setting():
    assert InferenceConfig().adaptive_config() is None
    cfg = InferenceConfig(samples=20, adaptive=True, adaptive_min_samples=5, adaptive_block=5)
    assert cfg.adaptive_config() == AdaptiveConfig(min_samples=5, block=5)


@pytest.mark.parametrize(
    "keys, message",
    [
        ({"adaptive_min_samples": 40}, "below the adaptive T_min"),
        ({"adaptive_error_rate": 0.0}, "error_rate"),
        ({"adaptive_rule": "quick"}, "adaptive rule must be one of"),
    ],
)
def test_bad_adaptive_keys_name_the_section(keys, message):
    with pytest.raises(ConfigError, match=r"\[inference\] adaptive_\*.*" + message):
        InferenceConfig(adaptive=True, **keys)


def test_the_example_config_documents_the_key():
    from importlib.resources import files

    text = (files("drifa_edge.serve") / "serve.example.toml").read_text()
    assert "adaptive = false" in text and "adaptive_min_samples" in text
