"""The OOD density file ``ood.npz`` beside the weights: per task, the class means, shared
precision matrix and referral threshold of a Mahalanobis score
(:mod:`drifa_edge.metrics.mahalanobis`), and which columns of the suffix's ``embedding``
output it reads.

Pickle-free: plain numeric arrays and one JSON string, read with ``allow_pickle=False``
(numpy only, so the torch-free edge install reads it). Its sha256 is listed in the
model card's ``files`` like the weights, and checked on every read.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from drifa_edge.artifact.atomic import atomic_write
from drifa_edge.artifact.card import CARD_FILE, read_card, verify_files, write_card
from drifa_edge.errors import ArtifactError, ConfigError

OOD_FILE = "ood.npz"
OOD_FORMAT = "drifa-edge-ood/1"
# feature space of a task's density: its own branch's slice of the embedding, or all of it
SPACES = ("branch", "fused")


@dataclass(frozen=True)
class TaskDensity:
    """One task's density: ``columns`` [start, stop) of the embedding, ``means`` (K, D),
    ``precision`` (D, D); a case is OOD when its score > ``threshold``."""

    space: str
    columns: tuple[int, int]
    classes: np.ndarray  # (K,) class indices present in the fit
    means: np.ndarray
    precision: np.ndarray
    threshold: float
    target_rate: float
    fit: dict[str, Any]  # provenance: cases used, shrinkage, samples T, split names

    def __post_init__(self) -> None:
        if self.space not in SPACES:
            raise ConfigError(f"OOD feature space must be one of {SPACES}, got {self.space!r}")
        d = self.columns[1] - self.columns[0]
        if self.means.ndim != 2 or self.means.shape[1] != d or self.precision.shape != (d, d):
            raise ArtifactError(
                f"OOD density shapes disagree: columns {self.columns}, means {self.means.shape}, "
                f"precision {self.precision.shape}"
            )

    def select(self, embedding: np.ndarray) -> np.ndarray:
        """(N, M*W3) embedding -> (N, D) the columns this density reads."""
        return embedding[:, self.columns[0] : self.columns[1]]


def write_ood(folder: str | Path, densities: dict[str, TaskDensity]) -> Path:
    """Write ``ood.npz`` into an artifact folder and list its sha256 in the folder's card."""
    folder = Path(folder)
    card = read_card(folder)
    unknown = sorted(set(densities) - set(card.task_names))
    if unknown:
        raise ConfigError(
            f"OOD densities for unknown tasks {unknown}; the model's tasks are {card.task_names}"
        )
    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {"format": OOD_FORMAT, "tasks": {}}
    for task, d in densities.items():
        k = card.task_names.index(task)
        arrays[f"{k}_classes"] = np.asarray(d.classes, np.int64)
        arrays[f"{k}_means"] = np.asarray(d.means, np.float64)
        arrays[f"{k}_precision"] = np.asarray(d.precision, np.float64)
        meta["tasks"][task] = {
            "index": k,
            "space": d.space,
            "columns": list(d.columns),
            "threshold": float(d.threshold),
            "target_rate": float(d.target_rate),
            "fit": d.fit,
        }
    arrays["meta"] = np.array(json.dumps(meta, sort_keys=True))  # a unicode scalar, not an object
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write(folder / OOD_FILE, buf.getvalue())
    write_card(card, folder, hash_files=[OOD_FILE])
    return folder / OOD_FILE


def read_ood(folder: str | Path) -> dict[str, TaskDensity] | None:
    """The densities of an artifact folder, or None when it has no ``ood.npz``.

    Raises ArtifactError when the file is not listed in the card or its sha256 differs."""
    folder = Path(folder)
    path = folder / OOD_FILE
    if not path.is_file():
        return None
    card = read_card(folder, verify=False)
    if OOD_FILE not in card.files:
        raise ArtifactError(
            f"{path}: not listed in {folder / CARD_FILE}, so it cannot be trusted; "
            "re-run 'drifa-edge calibrate-ood' on this folder"
        )
    verify_files(card, folder, only=[OOD_FILE])
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            out = {}
            for task, m in meta["tasks"].items():
                k = int(m["index"])
                out[task] = TaskDensity(
                    space=m["space"],
                    columns=(int(m["columns"][0]), int(m["columns"][1])),
                    classes=z[f"{k}_classes"],
                    means=z[f"{k}_means"],
                    precision=z[f"{k}_precision"],
                    threshold=float(m["threshold"]),
                    target_rate=float(m["target_rate"]),
                    fit=dict(m.get("fit", {})),
                )
    except (KeyError, ValueError, TypeError, OSError) as e:
        raise ArtifactError(
            f"{path}: not a valid OOD density file ({e}); re-run 'drifa-edge calibrate-ood'"
        ) from e
    if meta.get("format") != OOD_FORMAT:
        raise ArtifactError(f"{path}: format {meta.get('format')!r}, this drifa-edge reads {OOD_FORMAT!r}")
    return out
