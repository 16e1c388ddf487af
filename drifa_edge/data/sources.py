"""Labelled image sets: where the images of one task come from and how they are split.

A path given with ``--data NAME=PATH`` may be

- a folder of class subfolders (``derm/melanoma/x.jpg``), optionally under split folders
  (``train/``, ``val/``, ``test/``; also ``Training``, ``Testing``, ``valid``, ``Validation``...);
- a folder with ``labels.csv`` (columns ``file,label[,split][,case_id]``; other columns ignored;
  an optional ``classes.txt`` beside it fixes the class order, else classes are the sorted labels);
- a MedMNIST ``.npz`` (``train_images``/``train_labels``, ``val_*``, ``test_*``), or a folder holding one.

Where no split is given, a seeded, stratified split is made and recorded in ``split_source``;
where only train/test are given, val is carved out of train. ``fingerprint()`` hashes the sample
list and the bytes of every image so a model card pins exactly which data it saw.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from drifa_edge.data.labelled import LabelledSet, Sample
from drifa_edge.data.layouts import LABELS_FILE, open_csv, open_folders, open_npz, visible_dirs
from drifa_edge.data.splits import check_fractions
from drifa_edge.errors import BadInputError, ConfigError, suggest

__all__ = [
    "LabelledSet",
    "Sample",
    "load_datasets",
    "load_eval_arrays",
    "open_dataset",
    "parse_data_options",
]

log = logging.getLogger(__name__)

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


# ---------------------------------------------------------------- options


def parse_data_options(values: Sequence[str]) -> list[tuple[str, str]]:
    """``["derm=/data/isic", "scan=/data/x.npz"]`` -> [(name, path)];
    ``["synthetic"]`` -> [("synthetic", "")]. Checks names, duplicates and that each path exists."""
    values = [v.strip() for v in values if v is not None]
    if not values:
        raise ConfigError("no data given; pass --data synthetic or --data NAME=PATH once per task")
    if "synthetic" in values:
        if len(values) > 1:
            raise ConfigError(
                f"--data synthetic cannot be combined with other data sets (got {values}); "
                "use either 'synthetic' alone or NAME=PATH for every task"
            )
        return [("synthetic", "")]
    out: list[tuple[str, str]] = []
    for v in values:
        name, sep, path = v.partition("=")
        name, path = name.strip(), path.strip()
        if not sep or not name:
            raise ConfigError(f"--data {v!r}: expected NAME=PATH (e.g. derm=/data/isic) or 'synthetic'")
        if not _NAME_RE.match(name):
            raise ConfigError(f"--data {v!r}: task name {name!r} must be letters, digits, '-' or '_'")
        if not path:
            raise ConfigError(
                f"--data {v!r}: the path after '=' is empty; give the folder or .npz of task {name!r}"
            )
        if any(name == n for n, _ in out):
            raise ConfigError(
                f"--data {v!r}: task name {name!r} is given twice; each task needs its own name"
            )
        if not Path(path).expanduser().exists():
            raise ConfigError(f"--data {v!r}: path {path!r} does not exist")
        out.append((name, path))
    return out


def load_datasets(
    values: Sequence[str],
    seed: int = 0,
    synthetic_kwargs: dict | None = None,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
) -> dict[str, LabelledSet]:
    """Open every ``--data`` value; ``synthetic`` gives the built-in multimodal set."""
    options = parse_data_options(values)
    if options == [("synthetic", "")]:
        from drifa_edge.data.synthetic import make_synthetic

        kwargs = dict(synthetic_kwargs or {})
        kwargs.setdefault("seed", seed)
        return make_synthetic(**kwargs)
    return {
        name: open_dataset(name, path, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction)
        for name, path in options
    }


# ---------------------------------------------------------------- opening


def open_dataset(
    name: str, path: str | Path, seed: int = 0, val_fraction: float = 0.15, test_fraction: float = 0.15
) -> LabelledSet:
    """Open one task's data (see the module docstring for the layouts understood)."""
    check_fractions(val_fraction, test_fraction)
    p = Path(path).expanduser()
    if not p.exists():
        raise ConfigError(f"data set {name!r}: path {str(p)!r} does not exist")
    split = {"seed": seed, "val_fraction": val_fraction, "test_fraction": test_fraction}
    if p.is_file():
        if p.suffix.lower() == ".npz":
            return open_npz(name, p, **split)
        if p.suffix.lower() == ".csv":
            return open_csv(name, p.parent, p, **split)
        raise ConfigError(
            f"data set {name!r}: unsupported file {str(p)!r}; pass a folder of class subfolders, "
            f"a folder with {LABELS_FILE}, a {LABELS_FILE} file or a MedMNIST .npz"
        )
    if (p / LABELS_FILE).is_file():
        return open_csv(name, p, p / LABELS_FILE, **split)
    subdirs = visible_dirs(p)
    npz = sorted(p.glob("*.npz"))
    if not subdirs and len(npz) == 1:
        return open_npz(name, npz[0], **split)
    return open_folders(name, p, subdirs, **split)


# ---------------------------------------------------------------- evaluation


def load_eval_arrays(
    values: Sequence[str],
    card: Any,
    split: str = "test",
    limit: int | None = None,
    seed: int = 0,
    synthetic_kwargs: dict | None = None,
) -> tuple[list[np.ndarray], dict[str, np.ndarray], list[str]]:
    """Paired, preprocessed evaluation arrays for a model card.

    Returns (images per task in card order, each (B, C, S, S); labels {task: (B,) int64} in the card's
    class order, -1 where a row repeats a sample already scored; a row id per row: the case id, or
    the sample keys). Shorter sets cycle to the longest (or rows join on case id when every set has one).
    A file that cannot be read is logged and left out."""
    from drifa_edge.data.pairing import eval_rows
    from drifa_edge.data.preprocess import preprocess

    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be >= 1 (or None for every sample), got {limit}")
    tasks = list(card.task_names)
    if synthetic_kwargs is None and list(values) == ["synthetic"]:
        synthetic_kwargs = synthetic_options_from_card(card) or {"tasks": len(tasks)}
    sets = load_datasets(values, seed=seed, synthetic_kwargs=synthetic_kwargs)
    if sorted(sets) != sorted(tasks):
        raise ConfigError(
            f"data sets {sorted(sets)} do not match the model's tasks {tasks}; pass --data TASK=PATH"
        )
    parts = {t: sets[t].subset(split) for t in tasks}
    class_map = {t: _class_map(parts[t], card.model.tasks[k].classes) for k, t in enumerate(tasks)}
    for t, part in parts.items():
        if len(part) == 0:
            raise BadInputError(f"data set {t!r} has no {split!r} samples (counts: {sets[t].counts()})")
    cache: dict[tuple[str, int], np.ndarray] = {}
    bad: dict[str, set[int]] = {t: set() for t in tasks}
    while True:
        keep = {t: [i for i in range(len(parts[t])) if i not in bad[t]] for t in tasks}
        if any(not v for v in keep.values()):
            raise BadInputError(
                f"no readable {split!r} images left in data set(s) {[t for t in tasks if not keep[t]]}"
            )
        views = {t: parts[t]._with_samples([parts[t].samples[i] for i in keep[t]]) for t in tasks}
        rows, first, row_ids = eval_rows(views, seed=seed)
        if limit is not None:
            rows, first, row_ids = rows[:limit], first[:limit], row_ids[:limit]
        failed = False
        for row in rows:
            for t in tasks:
                original = keep[t][row[t]]
                if (t, original) in cache or original in bad[t]:
                    continue
                try:
                    cache[(t, original)] = preprocess(parts[t].load(original), card.preprocess[t])
                except BadInputError as e:
                    log.warning("skipping unreadable image of %r: %s", t, e)
                    bad[t].add(original)
                    failed = True
        if not failed:
            break
    images = [np.stack([cache[(t, keep[t][r[t]])] for r in rows]) for t in tasks]
    labels = {
        t: np.array(
            [
                class_map[t][views[t].samples[r[t]].label] if f[t] else -1
                for r, f in zip(rows, first, strict=True)
            ],
            dtype=np.int64,
        )
        for t in tasks
    }
    return images, labels, row_ids


def _class_map(part: LabelledSet, card_classes: Sequence[str]) -> list[int]:
    """Set label index -> card label index, by class name."""
    out = []
    for c in part.classes:
        if c not in card_classes:
            raise ConfigError(
                f"data set {part.name!r}: class {c!r} is not one of the model's classes {list(card_classes)}."
                f"{suggest(c, card_classes)}"
            )
        out.append(list(card_classes).index(c))
    return out


def synthetic_options_from_card(card: Any) -> dict | None:
    """The make_synthetic arguments recorded in a card's data section (any nesting), if any."""

    def walk(node: Any) -> dict | None:
        if isinstance(node, dict):
            if node.get("kind") == "synthetic" and isinstance(node.get("options"), dict):
                return dict(node["options"])
            for value in node.values():
                found = walk(value)
                if found is not None:
                    return found
        elif isinstance(node, list):
            for value in node:
                found = walk(value)
                if found is not None:
                    return found
        return None

    return walk(getattr(card, "data", None))
