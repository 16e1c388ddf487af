"""Input-quality limits (drifa_edge.data.quality): each limit at its boundary, and the card round trip."""

from __future__ import annotations

import numpy as np
import pytest

from drifa_edge.data.preprocess_spec import PreprocessSpec
from drifa_edge.data.quality import QualityLimits, check_quality
from drifa_edge.errors import ConfigError

RNG = np.random.default_rng(3)


def noise(h: int, w: int, c: int = 1) -> np.ndarray:
    return RNG.uniform(0.2, 0.8, (h, w, c)).astype(np.float32)


@pytest.mark.parametrize("size", [32, 64, 128, 224, 256, 280])
def test_medmnist_28px_passes_up_to_280px_models(size: int) -> None:
    assert check_quality(noise(28, 28), size) == []
    assert QualityLimits().min_side(size) == max(8, int(np.ceil(0.1 * size)))


def test_min_side_boundary_and_floor() -> None:
    assert check_quality(noise(13, 40), 128) == []  # ceil(12.8) = 13 px
    assert check_quality(noise(12, 40), 128)[0].startswith("too small: 40x12 px")
    assert check_quality(noise(8, 8), 32) == []  # the 8 px floor, not 0.1 x 32
    assert "too small" in check_quality(noise(7, 7), 32)[0]


def test_aspect_ratio_boundary() -> None:
    assert check_quality(noise(20, 80), 32) == []  # 4:1 is the limit itself
    assert check_quality(noise(20, 81), 32)[0].startswith("extreme aspect ratio 4.05:1")


def test_near_constant_and_saturated() -> None:
    flat = np.full((40, 40, 3), 0.5, np.float32)
    flat[0, 0] = 1.0  # one outlier pixel does not make a blank page an image
    issues = check_quality(flat, 32)
    assert len(issues) == 1 and issues[0].startswith("near-constant image")
    ramp = np.tile(np.linspace(0.4, 0.4 + 3 / 255, 40, dtype=np.float32), (40, 1))[..., None]
    assert check_quality(ramp, 32) == []  # a 3-level spread passes (limit 2/255)
    clipped = noise(40, 40)
    clipped[:37] = 1.0  # 92.5% at the top of the range
    assert any("92.5% of the pixels are saturated" in i for i in check_quality(clipped, 32))
    clipped[:35] = 0.2
    assert check_quality(clipped, 32) == []


def test_limits_validated_and_travel_in_the_card() -> None:
    with pytest.raises(ConfigError, match="max_aspect_ratio"):
        QualityLimits(max_aspect_ratio=0.5)
    default = PreprocessSpec(size=64, channels=1, mean=(0.5,), std=(0.5,))
    assert "quality" not in default.to_dict()  # cards from before the check stay byte-identical
    custom = PreprocessSpec(
        size=64, channels=1, mean=(0.5,), std=(0.5,), quality=QualityLimits(min_side_floor=20)
    )
    assert PreprocessSpec.from_dict(custom.to_dict()) == custom
    assert PreprocessSpec.from_dict(default.to_dict()) == default
