"""The OOD density file ``ood.npz`` beside the weights: per task, the class means, shared
precision matrix and referral threshold of a Mahalanobis score
(:mod:`drifa_edge.metrics.mahalanobis`), and which columns of the suffix's ``embedding``
output it reads; optionally (format 2, the default fit) a second Mahalanobis density of
the task's pooled prefix output and the validation mean / standard deviation of both
scores, whose standardised sum is then the score (:mod:`drifa_edge.inference.ood`).

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
OOD_FORMAT = "drifa-edge-ood/2"
READABLE_FORMATS = ("drifa-edge-ood/1", OOD_FORMAT)  # 1: embedding part only
# feature space of a task's density: its own branch's slice of the embedding, or all of it
SPACES = ("branch", "fused")
PREFIX_KEYS = ("center", "scale", "embedding_center", "embedding_scale")


@dataclass(frozen=True)
class PrefixDensity:
    """The low-level part of a task's score: class means (K, P) and precision (P, P) of the
    task's prefix statistics (P = 2 * W0: per channel mean and standard deviation of the
    prefix output), and the ``center`` / ``scale`` (val mean and standard deviation) of its
    Mahalanobis score, with ``embedding_center`` / ``embedding_scale`` those of the
    embedding part's score."""

    means: np.ndarray
    precision: np.ndarray
    center: float
    scale: float
    embedding_center: float
    embedding_scale: float

    def __post_init__(self) -> None:
        p = self.means.shape[1] if self.means.ndim == 2 else -1
        if p < 1 or self.precision.shape != (p, p):
            raise ArtifactError(
                f"OOD prefix density shapes disagree: means {self.means.shape}, precision {self.precision.shape}"
            )
        if not (self.scale > 0 and self.embedding_scale > 0):
            raise ArtifactError(f"OOD score scales must be > 0, got {self.scale} and {self.embedding_scale}")


@dataclass(frozen=True)
class TaskDensity:
    """One task's density: ``columns`` [start, stop) of the embedding, ``means`` (K, D),
    ``precision`` (D, D), optionally a ``prefix`` part; a case is OOD when its score >
    ``threshold``."""

    space: str
    columns: tuple[int, int]
    classes: np.ndarray  # (K,) class indices present in the fit
    means: np.ndarray
    precision: np.ndarray
    threshold: float
    target_rate: float
    fit: dict[str, Any]  # provenance: cases used, shrinkage, samples T, split names
    prefix: PrefixDensity | None = None  # None: the score is the embedding's Mahalanobis alone

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
        if d.prefix is not None:
            arrays[f"{k}_prefix_means"] = np.asarray(d.prefix.means, np.float64)
            arrays[f"{k}_prefix_precision"] = np.asarray(d.prefix.precision, np.float64)
            meta["tasks"][task]["prefix"] = {
                "center": float(d.prefix.center),
                "scale": float(d.prefix.scale),
                "embedding_center": float(d.prefix.embedding_center),
                "embedding_scale": float(d.prefix.embedding_scale),
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
            if meta.get("format") not in READABLE_FORMATS:
                raise ArtifactError(
                    f"{path}: format {meta.get('format')!r}, this drifa-edge reads {READABLE_FORMATS}; "
                    "re-run 'drifa-edge calibrate-ood' with this version"
                )
            for task, m in meta["tasks"].items():
                k = int(m["index"])
                prefix = None
                if "prefix" in m:
                    prefix = PrefixDensity(
                        means=z[f"{k}_prefix_means"],
                        precision=z[f"{k}_prefix_precision"],
                        **{key: float(m["prefix"][key]) for key in PREFIX_KEYS},
                    )
                out[task] = TaskDensity(
                    space=m["space"],
                    columns=(int(m["columns"][0]), int(m["columns"][1])),
                    classes=z[f"{k}_classes"],
                    means=z[f"{k}_means"],
                    precision=z[f"{k}_precision"],
                    threshold=float(m["threshold"]),
                    target_rate=float(m["target_rate"]),
                    fit=dict(m.get("fit", {})),
                    prefix=prefix,
                )
    except (KeyError, ValueError, TypeError, OSError) as e:
        raise ArtifactError(
            f"{path}: not a valid OOD density file ({e}); re-run 'drifa-edge calibrate-ood'"
        ) from e
    return out
