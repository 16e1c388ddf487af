"""Training data: labelled sets -> cached model-ready arrays -> paired batches.

Every image is decoded and preprocessed once (the same :func:`preprocess` every
runtime uses), kept as float32 (N, C, S, S) per task and split, then batches are
gathered by index. Normalization: by default mean 0.5 / std 0.5 per channel
(``normalize = "fixed"``: inputs in [-1, 1], independent of the data, what a user
can reproduce without the training set); ``normalize = "train"`` uses the
per-channel statistics of the train split. Either way the values go into the
model card, so a runtime never guesses them.

Channels per task: 1 when every probed image of the source is single-channel
(gray X-ray, gray microscopy), else 3; ``TrainConfig.channels`` overrides.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from drifa_edge.data.pairing import PairedSampler, eval_rows
from drifa_edge.data.preprocess import preprocess
from drifa_edge.data.preprocess_spec import PreprocessSpec
from drifa_edge.errors import BadInputError, ConfigError
from drifa_edge.model.config import TaskSpec
from drifa_edge.progress import stage, status
from drifa_edge.training.config import TrainConfig

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
UNSCORED = -1  # label of a row whose image only repeats the shorter set (drift.metrics convention)
CHANNEL_PROBES = 8  # images looked at to decide gray vs RGB
STD_FLOOR = 1e-3  # a constant channel must not divide by zero


@dataclass
class SplitArrays:
    x: np.ndarray  # (N, C, S, S) float32, normalized
    y: np.ndarray  # (N,) int64 class indices


@dataclass
class TaskData:
    spec: TaskSpec
    preprocess: PreprocessSpec
    splits: dict[str, SplitArrays]
    describe: dict[str, Any]


class TrainingData:
    """Cached arrays of every task and split, and the pairing of rows across tasks."""

    def __init__(self, tasks: dict[str, TaskData], subsets: dict[str, dict], cfg: TrainConfig) -> None:
        self.tasks = tasks
        self.subsets = subsets  # split -> task -> LabelledSet, for the sampler
        self.cfg = cfg
        self.sampler = PairedSampler(subsets["train"], mode=cfg.pairing, seed=cfg.seed)
        self._eval_cache: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {}

    def with_config(self, cfg: TrainConfig) -> TrainingData:
        """The same arrays under another config (an ensemble member's seed); the arrays
        themselves depend only on image size, channels and normalization."""
        keys = ("image_size", "normalize", "channels")
        if any(getattr(cfg, k) != getattr(self.cfg, k) for k in keys):
            raise ConfigError(f"prepared arrays were made for other {keys}; prepare the data again")
        return TrainingData(self.tasks, self.subsets, cfg)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.tasks)

    def task_specs(self) -> tuple[TaskSpec, ...]:
        return tuple(t.spec for t in self.tasks.values())

    def preprocess_specs(self) -> dict[str, PreprocessSpec]:
        return {n: t.preprocess for n, t in self.tasks.items()}

    def provenance(self) -> dict[str, Any]:
        return {
            "sets": {n: t.describe for n, t in self.tasks.items()},
            "pairing": self.cfg.pairing,
            "normalize": self.cfg.normalize,
            "cases": {n: {s: int(a.y.size) for s, a in t.splits.items()} for n, t in self.tasks.items()},
        }

    # -------------------------------------------------------------- training rows

    def train_pairs(self, epoch: int) -> list[dict[str, int]]:
        """The epoch's rows (one index per task), capped at ``max_train_pairs``; with
        ``class_balance = "sampler"`` each task's column is redrawn class-balanced."""
        pairs = list(self.sampler.epoch(epoch))
        if self.cfg.class_balance == "sampler":
            pairs = self._balanced(pairs, epoch)
        if self.cfg.max_train_pairs is not None:
            pairs = pairs[: self.cfg.max_train_pairs]
        if len(pairs) < 2:
            raise BadInputError(
                f"pairing {self.cfg.pairing!r} gives {len(pairs)} training rows; need at least 2 "
                "(with case_id pairing, every task needs images of the same case ids)"
            )
        return pairs

    def train_batches(self, epoch: int) -> Iterator[tuple[list[np.ndarray], list[np.ndarray]]]:
        """(images per task (B, C, S, S), labels per task (B,)) batches of one epoch.

        A last batch of one row is dropped: BatchNorm cannot normalize a single row
        at the 1x1 resolution of the last stage."""
        pairs = self.train_pairs(epoch)
        rng = np.random.default_rng([self.cfg.seed, epoch, 1])
        bs = self.cfg.batch_size
        for start in range(0, len(pairs), bs):
            rows = pairs[start : start + bs]
            if len(rows) < 2:
                break
            xs, ys = [], []
            for name, task in self.tasks.items():
                idx = np.fromiter((r[name] for r in rows), dtype=np.int64, count=len(rows))
                split = task.splits["train"]
                x = split.x[idx]
                if self.cfg.augment:
                    x = flip(x, rng)
                xs.append(x)
                ys.append(split.y[idx])
            yield xs, ys

    def _balanced(self, pairs: list[dict[str, int]], epoch: int) -> list[dict[str, int]]:
        """Each task's indices drawn with replacement, P(i) proportional to 1 / n_class(i), so
        every class is expected equally often; seeded by (seed, epoch, task position)."""
        columns = {}
        for k, (name, task) in enumerate(self.tasks.items()):
            y = task.splits["train"].y
            p = 1.0 / np.bincount(y)[y]
            rng = np.random.default_rng([self.cfg.seed, epoch, 2, k])
            columns[name] = rng.choice(y.size, size=len(pairs), replace=True, p=p / p.sum())
        return [{name: int(col[i]) for name, col in columns.items()} for i in range(len(pairs))]

    def balanced_class_weights(self) -> dict[str, np.ndarray]:
        """Per task, n / (C * n_c) over the train split (sklearn's
        ``compute_class_weight("balanced")``; a class absent from train gets weight 1)."""
        out = {}
        for name, task in self.tasks.items():
            y = task.splits["train"].y
            counts = np.bincount(y, minlength=task.spec.num_classes).astype(np.float64)
            w = np.ones_like(counts)
            seen = counts > 0
            w[seen] = y.size / (seen.sum() * counts[seen])
            out[name] = w.astype(np.float32)
        return out

    def class_weights(self) -> dict[str, np.ndarray | None]:
        """Per task, the cross-entropy class weights of the training loss: the balanced weights
        with ``class_balance = "weights"``, None otherwise."""
        if self.cfg.class_balance != "weights":
            return {name: None for name in self.tasks}
        return self.balanced_class_weights()

    def class_counts(self, split: str) -> dict[str, list[int]]:
        return {
            n: np.bincount(t.splits[split].y, minlength=t.spec.num_classes).tolist()
            for n, t in self.tasks.items()
        }

    def bn_batches(self, batch_size: int) -> Iterator[list[np.ndarray]]:
        """Every training image of every task once (shorter sets cycle, no augmentation),
        in batches of ``batch_size`` rows; a last batch of one row is dropped."""
        xs, _ = self.eval_rows("train")
        n = xs[0].shape[0]
        for start in range(0, n, batch_size):
            if n - start >= 2:
                yield [x[start : start + batch_size] for x in xs]

    def batches_per_epoch(self) -> int:
        n = len(self.sampler)
        if self.cfg.max_train_pairs is not None:
            n = min(n, self.cfg.max_train_pairs)
        return n // self.cfg.batch_size + (1 if n % self.cfg.batch_size >= 2 else 0)

    # -------------------------------------------------------------- evaluation rows

    def eval_rows(self, split: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Every case of ``split`` of every task scored exactly once (``data.pairing.eval_rows``:
        joined on case id when every set has case ids, else index pairing where shorter sets
        cycle). Returns (images per task (N, C, S, S), labels per task (N,), -1 = not scored).
        Built once per split (every epoch validates and recomputes BatchNorm on the same rows)."""
        if split not in self._eval_cache:
            self._eval_cache[split] = self._eval_rows(split)
        return self._eval_cache[split]

    def _eval_rows(self, split: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
        rows, first, _ = eval_rows(self.subsets[split], seed=self.cfg.seed)
        if not rows:
            raise BadInputError(f"no evaluation rows in the {split} split")
        xs, ys = [], []
        for name, task in self.tasks.items():
            arrays = task.splits[split]
            idx = np.fromiter((r[name] for r in rows), dtype=np.int64, count=len(rows))
            scored = np.fromiter((f[name] for f in first), dtype=bool, count=len(rows))
            xs.append(arrays.x[idx])
            ys.append(np.where(scored, arrays.y[idx], UNSCORED))
        return xs, ys


def flip(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random horizontal and vertical flips, each with probability 1/2 per image."""
    x = x.copy()
    h = rng.random(x.shape[0]) < 0.5
    v = rng.random(x.shape[0]) < 0.5
    x[h] = x[h][..., ::-1]
    x[v] = x[v][..., ::-1, :]
    return x


def infer_channels(labelled_set, probes: int = CHANNEL_PROBES) -> int:
    """1 if every probed image is single-channel, else 3."""
    n = len(labelled_set.samples)
    if n == 0:
        raise BadInputError(f"data set {labelled_set.name!r} has no images")
    picks = np.unique(np.linspace(0, n - 1, min(probes, n)).astype(int))
    return 1 if all(labelled_set.load(int(i)).shape[-1] == 1 for i in picks) else 3


def _raw_arrays(labelled_set, size: int, channels: int, progress=None) -> SplitArrays:
    """(N, C, S, S) in [0, 1], resized and channel-converted, not yet normalized."""
    identity = PreprocessSpec(size=size, channels=channels, mean=(0.0,) * channels, std=(1.0,) * channels)
    n = len(labelled_set.samples)
    x = np.empty((n, channels, size, size), dtype=np.float32)
    for i in range(n):
        x[i] = preprocess(labelled_set.load(i), identity)
        if progress is not None:
            progress()
    y = np.fromiter((s.label for s in labelled_set.samples), dtype=np.int64, count=n)
    return SplitArrays(x, y)


def _normalization(train: np.ndarray, channels: int, how: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if how == "fixed":
        return (0.5,) * channels, (0.5,) * channels
    mean = train.mean(axis=(0, 2, 3), dtype=np.float64)
    std = np.maximum(train.std(axis=(0, 2, 3), dtype=np.float64), STD_FLOOR)
    return tuple(round(float(m), 6) for m in mean), tuple(round(float(s), 6) for s in std)


def check_sets(sets: dict) -> None:
    """2 to 4 named sets, each with a train, val and test split."""
    if not 2 <= len(sets) <= 4:
        raise ConfigError(
            f"--data: DRIFA-Net takes 2 to 4 modalities (one --data per modality), got {len(sets)}: "
            f"{list(sets)}"
        )
    for name, s in sets.items():
        counts = {split: sum(1 for x in s.samples if x.split == split) for split in SPLITS}
        empty = [split for split, c in counts.items() if c == 0]
        if empty:
            raise BadInputError(f"data set {name!r} has no {'/'.join(empty)} images (split counts {counts})")


def prepare_data(sets: dict, cfg: TrainConfig, progress: bool = False) -> TrainingData:
    """Decode and preprocess every image once; pick channels and normalization per task."""
    check_sets(sets)
    unknown = sorted(set(cfg.channels) - set(sets))
    if unknown:
        raise ConfigError(f"channels names unknown tasks {unknown}; the tasks are {list(sets)}")
    subsets = {split: {name: s.subset(split) for name, s in sets.items()} for split in SPLITS}
    total = sum(len(s.samples) for s in sets.values())
    stage(f"reading and preprocessing {total} images of {', '.join(sets)} at {cfg.image_size} px")
    advance, close = _progress_bar(progress, total)
    tasks = {}
    try:
        for name, s in sets.items():
            channels = cfg.channels.get(name) or infer_channels(s)
            raw = {
                split: _raw_arrays(subsets[split][name], cfg.image_size, channels, advance)
                for split in SPLITS
            }
            mean, std = _normalization(raw["train"].x, channels, cfg.normalize)
            m = np.asarray(mean, dtype=np.float32)[None, :, None, None]
            sd = np.asarray(std, dtype=np.float32)[None, :, None, None]
            for a in raw.values():
                a.x -= m
                a.x /= sd
            tasks[name] = TaskData(
                spec=TaskSpec(name=name, classes=tuple(s.classes), channels=channels),
                preprocess=PreprocessSpec(size=cfg.image_size, channels=channels, mean=mean, std=std),
                splits=raw,
                describe=s.describe(),
            )
            log.info("%s: %d channel(s), mean %s std %s", name, channels, mean, std)
    finally:
        close()
    return TrainingData(tasks, subsets, cfg)


def _progress_bar(enabled: bool, total: int):
    if not enabled:
        return None, lambda: None
    from rich.console import Console
    from rich.progress import Progress

    console = Console(stderr=True)
    bar = Progress(transient=True, console=console, disable=not console.is_terminal)
    bar.start()
    task = bar.add_task("preprocessing images", total=total)
    done = [0]

    def advance() -> None:
        bar.advance(task)
        done[0] += 1
        status(f"preprocessing images: {done[0]} of {total}")  # repeated in a log by the CLI

    return advance, bar.stop
