"""What a runtime needs to turn an image into model input (no heavy imports)."""

from __future__ import annotations

from dataclasses import dataclass, field

from drifa_edge.data.quality import QualityLimits
from drifa_edge.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class PreprocessSpec:
    """Resize to ``size`` x ``size`` (bilinear), convert to ``channels``, scale to
    [0, 1], then ``(x - mean) / std`` per channel. Output layout (C, H, W) float32.

    ``quality`` holds the input-quality limits (:mod:`drifa_edge.data.quality`) checked before
    inference. It is written to the card only when it differs from the defaults, so cards and
    the copies embedded in exported graphs before it existed stay identical."""

    size: int
    channels: int = 3
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    quality: QualityLimits = field(default_factory=QualityLimits)

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ConfigError(f"channels must be 1 or 3, got {self.channels}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ConfigError(f"mean/std need {self.channels} values, got mean={self.mean} std={self.std}")
        if any(s <= 0 for s in self.std):
            raise ConfigError(f"std must be positive, got {self.std}")
        if self.size < 8:
            raise ConfigError(f"size must be >= 8, got {self.size}")

    def to_dict(self) -> dict:
        out = {"size": self.size, "channels": self.channels, "mean": list(self.mean), "std": list(self.std)}
        if self.quality != QualityLimits():
            out["quality"] = self.quality.to_dict()
        return out

    @classmethod
    def from_dict(cls, d: dict) -> PreprocessSpec:
        return cls(
            size=int(d["size"]),
            channels=int(d["channels"]),
            mean=tuple(d["mean"]),
            std=tuple(d["std"]),
            quality=QualityLimits.from_dict(d.get("quality")),
        )

    @classmethod
    def default(cls, size: int, channels: int) -> PreprocessSpec:
        return cls(size=size, channels=channels, mean=(0.5,) * channels, std=(0.5,) * channels)
