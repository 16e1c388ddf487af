"""Training configuration (pure data, no torch import).

The defaults are the authors' notebook (``drifa-net.ipynb``): Adam 1e-3, 200
epochs, batch 32, loss weights (gamma, 1 - gamma) with gamma = 0.5,
ReduceLROnPlateau(val_loss, factor 0.2, patience 5, min 1e-5), EarlyStopping
(val_loss, patience 100), best checkpoint by val_loss. A config is read from a
TOML recipe (``train/*.toml``) plus command-line overrides and saved into the
model card's ``training`` section.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drifa_edge.errors import ConfigError, suggest
from drifa_edge.profiles import profile_file, profile_names, read_toml

PAIRING_MODES = ("index", "case_id")
NORMALIZATIONS = ("fixed", "train")  # fixed: mean 0.5 / std 0.5; train: statistics of the train split
# none: plain cross-entropy; weights: per-class loss weights n / (C * n_c) (sklearn's "balanced");
# sampler: each task's training rows drawn with probability 1 / n_c of their class (index pairing only)
CLASS_BALANCES = ("none", "weights", "sampler")
# fp32; bf16: bfloat16 autocast for the training forward pass; auto: bf16 when the CPU has AMX,
# else fp32 (AVX512-BF16 alone measured no faster; see drifa_edge.training.precision)
PRECISIONS = ("auto", "bf16", "fp32")
RECIPE_ONLY_KEYS = ("data", "description")  # recipe keys that are not TrainConfig fields


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 200
    batch_size: int = 32
    lr: float = 1e-3
    image_size: int = 128
    width: float = 1.0
    dropout: float = 0.25
    seed: int = 0
    # Keras BatchNormalization momentum 0.99 == PyTorch 0.01: running statistics need a few hundred
    # steps to settle; short runs (demo, tests) use 0.1, PyTorch's default.
    bn_momentum: float = 0.01
    # Loss weights: two tasks -> (gamma, 1 - gamma) as in the paper; M tasks -> task_weights,
    # or equal weights 1/M when neither is given (gamma = 0.5 for two tasks).
    gamma: float | None = None
    task_weights: tuple[float, ...] | None = None
    plateau_factor: float = 0.2
    plateau_patience: int = 5
    min_lr: float = 1e-5
    early_stopping_patience: int | None = 100  # epochs without a better val loss; None: never stop early
    ensemble: int = 1  # K members, seeds seed + k
    pairing: str = "index"  # how one training row picks one image per modality (see train/README.md)
    augment: bool = True  # random horizontal and vertical flips, per image
    normalize: str = "fixed"
    channels: dict[str, int] = field(default_factory=dict)  # task -> 1 or 3; default: inferred from the data
    referral_rate: float = 0.1  # fraction of validation cases referred; fits the referral threshold
    mc_samples: int = 10  # MC dropout samples per case in the final validation/test evaluation
    max_train_pairs: int | None = None  # cap on training rows per epoch (quick runs)
    threads: int | None = None  # torch intra-op threads; None: torch's default
    class_balance: str = "none"  # see CLASS_BALANCES
    precision: str = "auto"  # see PRECISIONS
    channels_last: bool = True  # NHWC memory format for model and batches (faster convolutions on CPU)
    # recompute BatchNorm running statistics over the training data before each validation and
    # checkpoint (drifa_edge.training.batchnorm); off only to reproduce the stale-statistics failure
    recompute_bn: bool = True

    def __post_init__(self) -> None:
        _positive_int("epochs", self.epochs)
        _positive_int("batch_size", self.batch_size)
        if self.batch_size < 2:
            raise ConfigError(f"batch_size must be >= 2 (BatchNorm needs two rows), got {self.batch_size}")
        _positive_float("lr", self.lr)
        if not isinstance(self.image_size, int) or self.image_size < 32 or self.image_size % 32:
            raise ConfigError(f"image_size must be a multiple of 32 (>= 32), got {self.image_size!r}")
        if not isinstance(self.width, (int, float)) or not 0.0 < self.width <= 4.0:
            raise ConfigError(f"width must be in (0, 4], got {self.width!r}")
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed!r}")
        if not isinstance(self.bn_momentum, (int, float)) or not 0.0 < self.bn_momentum <= 1.0:
            raise ConfigError(f"bn_momentum must be in (0, 1], got {self.bn_momentum!r}")
        self._check_weights()
        if not 0.0 < self.plateau_factor < 1.0:
            raise ConfigError(f"plateau_factor must be in (0, 1), got {self.plateau_factor!r}")
        _positive_int("plateau_patience", self.plateau_patience)
        _positive_float("min_lr", self.min_lr)
        if self.early_stopping_patience is not None:
            _positive_int("early_stopping_patience", self.early_stopping_patience)
        _positive_int("ensemble", self.ensemble)
        if self.pairing not in PAIRING_MODES:
            raise ConfigError(
                f"pairing must be one of {PAIRING_MODES}, got {self.pairing!r}"
                + suggest(str(self.pairing), PAIRING_MODES)
            )
        if not isinstance(self.augment, bool):
            raise ConfigError(f"augment must be true or false, got {self.augment!r}")
        if self.normalize not in NORMALIZATIONS:
            raise ConfigError(
                f"normalize must be one of {NORMALIZATIONS}, got {self.normalize!r}"
                + suggest(str(self.normalize), NORMALIZATIONS)
            )
        if not isinstance(self.channels, dict):
            raise ConfigError(f"channels must map task names to 1 or 3, got {self.channels!r}")
        for task, c in self.channels.items():
            if c not in (1, 3) or isinstance(c, bool):
                raise ConfigError(f"channels[{task!r}] must be 1 or 3, got {c!r}")
        if not isinstance(self.referral_rate, (int, float)) or not 0.0 <= self.referral_rate < 1.0:
            raise ConfigError(f"referral_rate must be in [0, 1), got {self.referral_rate!r}")
        _positive_int("mc_samples", self.mc_samples)
        if self.max_train_pairs is not None:
            _positive_int("max_train_pairs", self.max_train_pairs)
            if self.max_train_pairs < 2:
                raise ConfigError(f"max_train_pairs must be >= 2, got {self.max_train_pairs}")
        if self.threads is not None:
            _positive_int("threads", self.threads)
        for name, value, choices in (
            ("class_balance", self.class_balance, CLASS_BALANCES),
            ("precision", self.precision, PRECISIONS),
        ):
            if value not in choices:
                raise ConfigError(
                    f"{name} must be one of {choices}, got {value!r}" + suggest(str(value), choices)
                )
        if self.class_balance == "sampler" and self.pairing != "index":
            raise ConfigError(
                "class_balance 'sampler' redraws each task's rows on its own, which would break "
                f"pairing {self.pairing!r}; use class_balance 'weights' with case_id pairing"
            )
        for name in ("channels_last", "recompute_bn"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")

    def _check_weights(self) -> None:
        if self.gamma is not None and self.task_weights is not None:
            raise ConfigError("give either gamma (two tasks) or task_weights, not both")
        if self.gamma is not None and (
            not isinstance(self.gamma, (int, float)) or not 0.0 < self.gamma < 1.0
        ):
            raise ConfigError(f"gamma must be in (0, 1), got {self.gamma!r}")
        if self.task_weights is not None:
            if not 2 <= len(self.task_weights) <= 4 or any(
                not isinstance(w, (int, float)) or not w > 0 for w in self.task_weights
            ):
                raise ConfigError(f"task_weights must be 2 to 4 positive numbers, got {self.task_weights!r}")

    def loss_weights(self, n_tasks: int) -> tuple[float, ...]:
        """Weight of each task's cross-entropy in the total loss."""
        if self.task_weights is not None:
            if len(self.task_weights) != n_tasks:
                raise ConfigError(
                    f"task_weights has {len(self.task_weights)} values but the data has {n_tasks} tasks"
                )
            return tuple(float(w) for w in self.task_weights)
        if self.gamma is not None:
            if n_tasks != 2:
                raise ConfigError(
                    f"gamma weighs exactly two tasks (gamma, 1 - gamma); the data has {n_tasks}: "
                    "use task_weights instead"
                )
            return (float(self.gamma), 1.0 - float(self.gamma))
        return (1.0 / n_tasks,) * n_tasks

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if d["task_weights"] is not None:
            d["task_weights"] = list(d["task_weights"])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = [f.name for f in dataclasses.fields(cls)]
        for key in d:
            if key not in known:
                raise ConfigError(f"unknown training option {key!r}" + suggest(key, known))
        d = dict(d)
        if d.get("task_weights") is not None:
            d["task_weights"] = tuple(d["task_weights"])
        if d.get("channels") is not None:
            d["channels"] = dict(d["channels"])
        return cls(**d)


def _positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def _positive_float(name: str, value: Any) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
        raise ConfigError(f"{name} must be a positive number, got {value!r}")


def read_recipe(path: str | Path) -> dict[str, Any]:
    """The raw key/value table of a TOML recipe: a file, or the name of a shipped recipe ("demo")."""
    path = Path(path)
    if not path.is_file():
        named = profile_file("train", str(path))
        if named is None:
            raise ConfigError(
                f"recipe {path} does not exist; pass a TOML file or one of the shipped recipes "
                f"{profile_names('train')} (see train/README.md)" + suggest(str(path), profile_names("train"))
            )
        return read_toml(named)
    return read_toml(path)


def load_config(recipe: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Recipe values, then every override that is not None, then validation."""
    values: dict[str, Any] = {}
    if recipe is not None:
        values = {k: v for k, v in read_recipe(recipe).items() if k not in RECIPE_ONLY_KEYS}
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return TrainConfig.from_dict(values)
