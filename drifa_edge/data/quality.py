"""Input-quality check: images no model answer should be trusted on (numpy only).

A 1x1 pixel, a 1x3200 strip, a blank page or an almost all-white scan is resized to the
model's input and gets an answer as confident as any other. These limits catch such inputs
before inference; the caller either refuses the case or predicts it with ``refer = true`` and
the reason ``input_quality`` (the default, see ``drifa_edge.inference``). The limits travel in
the model card's preprocessing (``PreprocessSpec.quality``), so every runtime applies the same.

Limits (defaults; on the shared real data, 7,968 images of blood_pbc8, skin_isic9,
pap_smear_cric6 and PneumoniaMNIST 28x28, they flag exactly one: a blank white pap smear
crop, ASC-US/4462.png; ``benchmarks/input_quality.py``):

- smaller side >= max(``min_side_floor`` px, ``min_side_fraction`` x the model input size):
  8 px and 0.1, i.e. 13 px for a 128 px model, so 28x28 MedMNIST passes up to a 280 px model;
- aspect ratio (longer / shorter side) <= ``max_aspect_ratio`` = 4;
- near-constant: the 1st-99th percentile spread of the gray image >= ``min_spread`` = 2/255
  (the lowest on the other real images was 30/255);
- saturated: at most ``max_saturated_fraction`` = 0.9 of the pixels at 0 or 1 in every
  channel (the highest measured was 0.008).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from drifa_edge.errors import ConfigError

QUALITY_ACTIONS = ("refer", "refuse")


@dataclass(frozen=True)
class QualityLimits:
    """The limits of :func:`check_quality`; see the module docstring."""

    min_side_fraction: float = 0.1
    min_side_floor: int = 8
    max_aspect_ratio: float = 4.0
    min_spread: float = 2 / 255
    max_saturated_fraction: float = 0.9

    def __post_init__(self) -> None:
        if not 0 <= self.min_side_fraction <= 1:
            raise ConfigError(f"min_side_fraction must lie in [0, 1], got {self.min_side_fraction}")
        if self.min_side_floor < 1:
            raise ConfigError(f"min_side_floor must be >= 1 px, got {self.min_side_floor}")
        if not self.max_aspect_ratio >= 1:
            raise ConfigError(f"max_aspect_ratio must be >= 1, got {self.max_aspect_ratio}")
        if not 0 <= self.min_spread < 1:
            raise ConfigError(f"min_spread must lie in [0, 1), got {self.min_spread}")
        if not 0 < self.max_saturated_fraction <= 1:
            raise ConfigError(f"max_saturated_fraction must lie in (0, 1], got {self.max_saturated_fraction}")

    def min_side(self, input_size: int) -> int:
        return max(self.min_side_floor, math.ceil(self.min_side_fraction * input_size))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> QualityLimits:
        return cls(**d) if d else cls()


def check_quality(image: np.ndarray, input_size: int, limits: QualityLimits | None = None) -> list[str]:
    """Problems of an (H, W, C) image in [0, 1] for a model taking ``input_size`` px; [] if none.

    Each problem is one sentence naming the measured value and the limit."""
    limits = limits or QualityLimits()
    h, w = image.shape[:2]
    issues = []
    need = limits.min_side(input_size)
    if min(h, w) < need:
        issues.append(
            f"too small: {w}x{h} px; the smaller side must be >= {need} px "
            f"({limits.min_side_fraction:g} of the model input {input_size} px, at least {limits.min_side_floor})"
        )
    aspect = max(h, w) / max(1, min(h, w))
    if aspect > limits.max_aspect_ratio:
        issues.append(
            f"extreme aspect ratio {aspect:.3g}:1 ({w}x{h} px); the limit is {limits.max_aspect_ratio:g}:1"
        )
    gray = image.mean(axis=-1)
    lo, hi = np.percentile(gray, [1, 99])
    if hi - lo < limits.min_spread:
        issues.append(
            f"near-constant image: 98% of the pixels lie within {255 * (hi - lo):.3g}/255 of each other "
            f"(a blank page?); the limit is {255 * limits.min_spread:.3g}/255"
        )
    saturated = float(((image <= 0.0) | (image >= 1.0)).all(axis=-1).mean())
    if saturated > limits.max_saturated_fraction:
        issues.append(
            f"{100 * saturated:.3g}% of the pixels are saturated (at 0 or 1); "
            f"the limit is {100 * limits.max_saturated_fraction:.3g}%"
        )
    return issues
