"""Calibration data for INT8: real images through the model card's preprocessing.

``--calib`` takes the same values as ``--data`` ("synthetic", or NAME=PATH once
per task). From the chosen split, ``subset`` cases are drawn with a seeded
permutation per task and paired by position (shorter sets cycle), the way the
authors pair independent single-modality sets. Every image goes through
:func:`drifa_edge.data.preprocess.preprocess` with the card's spec, exactly as
at inference; a runtime never guesses normalization and neither does calibration.

Provenance: :attr:`CalibrationSet.digest` is the sha256 over the card's
preprocessing and, per task, the ordered list of chosen sample keys and the
sha256 of each sample's bytes (the file for file-backed sets, the array for
in-memory ones). Other data, another subset, seed or split give another digest;
an export records it and never reuses an INT8 build made from other data.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from drifa_edge.artifact.card import ModelCard
from drifa_edge.errors import BadInputError, ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CalibrationSet:
    """Preprocessed calibration cases: ``images[k]`` is task k's (N, C, S, S) float32, in card order."""

    tasks: tuple[str, ...]
    images: tuple[np.ndarray, ...]
    labels: tuple[np.ndarray, ...]  # (N,) class index per task (used by accuracy control)
    keys: tuple[tuple[str, ...], ...]
    digest: str
    source: dict[str, Any]

    @property
    def cases(self) -> int:
        return int(self.images[0].shape[0])

    def take(self, start: int, stop: int) -> list[np.ndarray]:
        """The images of cases [start, stop) of every task."""
        return [x[start:stop] for x in self.images]

    def provenance(self, seed: int, split: str, preset: str) -> dict[str, Any]:
        """What the card records about this set (``export.int8.calibration``)."""
        return {
            "sha256": self.digest,
            "subset": self.cases,
            "seed": int(seed),
            "split": split,
            "preset": preset,
            "nncf": _version("nncf"),
            "source": self.source,
        }


def _version(package: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _match_tasks(card: ModelCard, sets: dict[str, Any], synthetic: bool) -> dict[str, Any]:
    """card task -> data set; by name, or by position for the built-in synthetic data."""
    names = list(card.task_names)
    if sorted(sets) == sorted(names):
        return {n: sets[n] for n in names}
    if synthetic and len(sets) == len(names):
        log.info("synthetic calibration data: tasks %s taken for the card's %s", list(sets), names)
        return dict(zip(names, sets.values(), strict=True))
    raise ConfigError(
        f"--calib names tasks {sorted(sets)} but the model has tasks {names}; "
        "pass NAME=PATH once per task with the model's task names"
    )


def _sample_digest(labelled_set: Any, i: int, image: np.ndarray) -> str:
    """sha256 of one sample's bytes: its file when file-backed, else the in-memory array."""
    root = getattr(labelled_set, "root", None)
    if root is not None:
        path = root / labelled_set.samples[i].key
        try:
            return hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError as e:
            raise BadInputError(f"{path}: cannot read the calibration image ({e})") from e
    a = np.ascontiguousarray(image)
    return hashlib.sha256(f"{a.dtype.str}{a.shape}".encode() + a.tobytes()).hexdigest()


def _card_labels(part: Any, card_classes: Sequence[str], chosen: list[int]) -> np.ndarray:
    """Labels in the card's class order; -1 when the data's classes are not the model's
    (e.g. synthetic images for calibration only: fine for ranges, not for accuracy)."""
    if not set(part.classes) <= set(card_classes):
        return np.full(len(chosen), -1, dtype=np.int64)
    to_card = [list(card_classes).index(c) for c in part.classes]
    return np.array([to_card[part.samples[i].label] for i in chosen], dtype=np.int64)


def calibration_from_sets(
    sets: dict[str, Any],
    card: ModelCard,
    subset: int,
    seed: int,
    split: str = "train",
    synthetic: bool = False,
) -> CalibrationSet:
    """Draw ``subset`` cases of ``split`` from labelled sets ({task: LabelledSet})."""
    from drifa_edge.data.preprocess import preprocess

    if subset < 1:
        raise ConfigError(f"calibration subset must be >= 1, got {subset}")
    matched = _match_tasks(card, sets, synthetic)
    parts = {t: s.subset(split) for t, s in matched.items()}
    empty = [t for t, s in parts.items() if len(s) == 0]
    if empty:
        raise BadInputError(f"calibration data has no '{split}' images for task(s) {empty}")
    n = min(subset, max(len(s) for s in parts.values()))
    if n < subset:
        log.warning("calibration: only %d '%s' cases available, %d asked for", n, split, subset)
    h = hashlib.sha256()
    h.update(json.dumps({t: card.preprocess[t].to_dict() for t in card.task_names}, sort_keys=True).encode())
    images, labels, keys = [], [], []
    for k, (task, part) in enumerate(parts.items()):
        order = np.random.default_rng([int(seed) & 0xFFFFFFFF, k]).permutation(len(part))
        chosen = [int(order[i % len(order)]) for i in range(n)]
        spec = card.preprocess[task]
        x = np.empty((n, spec.channels, spec.size, spec.size), dtype=np.float32)
        h.update(f"\x1etask\t{task}\n".encode())
        for row, i in enumerate(chosen):
            image = part.load(i)
            x[row] = preprocess(image, spec)
            h.update(f"{part.samples[i].key}\t{_sample_digest(part, i, image)}\n".encode())
        images.append(x)
        labels.append(_card_labels(part, card.model.tasks[k].classes, chosen))
        keys.append(tuple(part.samples[i].key for i in chosen))
    source = {
        task: {"name": getattr(s, "name", task), "kind": getattr(s, "kind", None), "split": split}
        for task, s in parts.items()
    }
    return CalibrationSet(tuple(parts), tuple(images), tuple(labels), tuple(keys), h.hexdigest(), source)


def split_seed(card: ModelCard) -> int:
    """The seed the training run split unsplit data with, so 'train' means the same images
    here (calibration never draws from the model's own test cases)."""
    for desc in (card.data.get("sets") or {}).values():
        seed = (desc.get("options") or {}).get("seed") if isinstance(desc, dict) else None
        if isinstance(seed, int):
            return seed
    return 0


def load_calibration_set(
    values: Sequence[str], card: ModelCard, subset: int, seed: int, split: str = "train"
) -> CalibrationSet:
    """Open ``--calib`` values and draw the calibration cases (see the module docstring).

    The data is split with the training run's seed (from the card); ``seed`` only
    chooses the subset."""
    from drifa_edge.data.sources import load_datasets, parse_data_options, synthetic_options_from_card

    synthetic = parse_data_options(values) == [("synthetic", "")]
    kwargs = None
    if synthetic:  # the built-in set as the model was trained on it, else at the model's size
        kwargs = synthetic_options_from_card(card) or {
            "tasks": len(card.task_names),
            "size": card.model.image_size,
        }
    sets = load_datasets(values, seed=split_seed(card), synthetic_kwargs=kwargs)
    return calibration_from_sets(sets, card, subset, seed, split, synthetic=synthetic)


def tile_rows(features: Sequence[np.ndarray], case: int, rows: int) -> list[np.ndarray]:
    """One case's features repeated ``rows`` times: (rows, ...) per task (fresh MC masks per row)."""
    return [np.repeat(f[case : case + 1], rows, axis=0) for f in features]
