"""Architecture configuration of DRIFA-Net (pure data, no torch import)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from drifa_edge.errors import ConfigError

PAPER_WIDTHS = (64, 128, 256, 512)


@dataclass(frozen=True)
class TaskSpec:
    """One task = one modality branch with its own input and softmax head."""

    name: str
    classes: tuple[str, ...]
    channels: int = 3

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"task name {self.name!r} must be alphanumeric (with - or _)")
        if len(self.classes) < 2:
            raise ConfigError(f"task {self.name!r} needs at least 2 classes, got {list(self.classes)}")
        if len(set(self.classes)) != len(self.classes):
            raise ConfigError(f"task {self.name!r} has duplicate class names: {list(self.classes)}")
        if self.channels not in (1, 3):
            raise ConfigError(f"task {self.name!r}: channels must be 1 or 3, got {self.channels}")

    @property
    def num_classes(self) -> int:
        return len(self.classes)


@dataclass(frozen=True)
class ModelConfig:
    """DRIFA-Net hyper-parameters; the defaults are the paper's configuration."""

    tasks: tuple[TaskSpec, ...]
    image_size: int = 128
    width: float = 1.0
    dropout: float = 0.25
    bn_eps: float = 1e-3  # Keras BatchNormalization default
    bn_momentum: float = 0.01  # Keras momentum 0.99 == PyTorch momentum 0.01
    widths: tuple[int, ...] = field(default=PAPER_WIDTHS)

    def __post_init__(self) -> None:
        if not 2 <= len(self.tasks) <= 4:
            raise ConfigError(f"DRIFA-Net takes 2 to 4 modalities, got {len(self.tasks)}")
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ConfigError(f"task names must be unique, got {names}")
        if self.image_size < 32 or self.image_size % 32:
            raise ConfigError(f"image_size must be a multiple of 32 (>= 32), got {self.image_size}")
        if not 0.0 < self.width <= 4.0:
            raise ConfigError(f"width multiplier must be in (0, 4], got {self.width}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if len(self.widths) != 4:
            raise ConfigError(f"widths must list 4 stage widths, got {self.widths}")

    @property
    def stage_widths(self) -> tuple[int, ...]:
        """Channel widths after applying the width multiplier (at least 8)."""
        return tuple(max(8, int(round(w * self.width))) for w in self.widths)

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tasks)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        d = dict(d)
        d["tasks"] = tuple(
            TaskSpec(name=t["name"], classes=tuple(t["classes"]), channels=int(t.get("channels", 3)))
            for t in d["tasks"]
        )
        if "widths" in d:
            d["widths"] = tuple(d["widths"])
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown model config keys {sorted(unknown)}")
        return cls(**d)


def paper_config(num_classes: tuple[int, ...] = (7, 8), image_size: int = 128) -> ModelConfig:
    """The configuration of the paper (two RGB 128x128 modalities, widths 64..512)."""
    tasks = tuple(
        TaskSpec(name=f"task{i}", classes=tuple(f"c{j}" for j in range(k))) for i, k in enumerate(num_classes)
    )
    return ModelConfig(tasks=tasks, image_size=image_size)


def dropout_shapes(cfg: ModelConfig) -> list[tuple[int, int, int]]:
    """(C, H, W) of every MC dropout input, in module order (branch by branch,
    then the final one after concatenation). Used to feed external masks."""
    from drifa_edge.model.drifa_layout import BLOCK_LAYOUT

    widths = cfg.stage_widths
    shapes = []
    for _ in cfg.tasks:
        size = cfg.image_size // 4
        for stage, stride, has_drop, _mfa in BLOCK_LAYOUT:
            size = size // stride
            if has_drop:
                shapes.append((widths[stage], size, size))
    shapes.append((len(cfg.tasks) * widths[-1], cfg.image_size // 32, cfg.image_size // 32))
    return shapes
