"""One task's labelled images: the sample list, how to load each, and what identifies it."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from drifa_edge.data.readers import array_to_image, read_image
from drifa_edge.data.splits import SPLITS
from drifa_edge.errors import BadInputError, ConfigError, suggest


@dataclass(frozen=True)
class Sample:
    """One image: ``key`` is its path relative to the set's root (or an in-memory key)."""

    key: str
    label: int
    split: str
    case_id: str | None = None


class LabelledSet:
    """One task's labelled images, file-backed (``root``) or in memory (``arrays``)."""

    def __init__(
        self,
        name: str,
        classes: Sequence[str],
        samples: Sequence[Sample],
        root: Path | None = None,
        split_source: str = "given",
        arrays: Mapping[str, np.ndarray] | None = None,
        kind: str = "folder",
        options: Mapping[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.classes = tuple(classes)
        self.samples = list(samples)
        self.root = Path(root) if root is not None else None
        self.split_source = split_source
        self.kind = kind
        self.options = dict(options or {})
        self._arrays = arrays
        self._fingerprint: str | None = None
        if self.root is None and arrays is None:
            raise ConfigError(f"data set {name!r} needs a root folder or in-memory arrays")
        for s in self.samples:
            if not 0 <= s.label < len(self.classes) or s.split not in SPLITS:
                raise ConfigError(
                    f"data set {name!r}: bad sample {s} (classes {self.classes}, splits {SPLITS})"
                )

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        return f"LabelledSet({self.name!r}, {len(self)} samples, {len(self.classes)} classes, {self.kind})"

    @property
    def labels(self) -> np.ndarray:
        return np.array([s.label for s in self.samples], dtype=np.int64)

    @property
    def has_case_ids(self) -> bool:
        return bool(self.samples) and all(s.case_id for s in self.samples)

    def load(self, i: int) -> np.ndarray:
        """Image ``i`` as (H, W, C) float32 in [0, 1]; in-memory float images are returned
        read-only without a copy (copy before editing in place)."""
        sample = self.samples[i]
        if self._arrays is not None:
            array = self._arrays[sample.key]
            if array.dtype == np.float32 and array.ndim == 3:
                return array
            return array_to_image(array, f"{self.name}:{sample.key}")
        assert self.root is not None
        return read_image(self.root / sample.key)

    def subset(self, split: str) -> LabelledSet:
        """The samples of one split, sharing storage with this set."""
        if split not in SPLITS:
            raise ConfigError(
                f"unknown split {split!r}; use one of {', '.join(SPLITS)}.{suggest(split, SPLITS)}"
            )
        return self._with_samples([s for s in self.samples if s.split == split])

    def _with_samples(self, samples: list[Sample]) -> LabelledSet:
        return LabelledSet(
            self.name,
            self.classes,
            samples,
            self.root,
            self.split_source,
            self._arrays,
            self.kind,
            self.options,
        )

    def counts(self) -> dict[str, dict[str, int]]:
        """{split: {class: n}} for every split and class (zeros included), plus 'total'."""
        c = Counter((s.split, s.label) for s in self.samples)
        out = {sp: {cls: c[(sp, k)] for k, cls in enumerate(self.classes)} for sp in SPLITS}
        out["total"] = {cls: sum(out[sp][cls] for sp in SPLITS) for cls in self.classes}
        return out

    def fingerprint(self) -> str:
        """sha256 over the class list, the sorted (key, class, split, case) rows and every image's bytes."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            h.update(("\x1f".join(self.classes) + "\n").encode())
            for s in sorted(self.samples, key=lambda s: s.key):
                h.update(f"{s.key}\t{self.classes[s.label]}\t{s.split}\t{s.case_id or ''}\n".encode())
                h.update(self._content_digest(s.key))
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def _content_digest(self, key: str) -> bytes:
        if self._arrays is not None:
            a = np.ascontiguousarray(self._arrays[key])
            return hashlib.sha256(f"{a.dtype.str}{a.shape}".encode() + a.tobytes()).digest()
        assert self.root is not None
        path = self.root / key
        try:
            return hashlib.sha256(path.read_bytes()).digest()
        except OSError as e:
            raise BadInputError(f"{path}: cannot read the file ({e})") from e

    def describe(self) -> dict[str, Any]:
        """What a model card records about this set."""
        return {
            "name": self.name,
            "kind": self.kind,
            "path": str(self.root) if self.root is not None else None,
            "options": dict(self.options),
            "classes": list(self.classes),
            "split_source": self.split_source,
            "num_samples": len(self.samples),
            "counts": self.counts(),
            "fingerprint": self.fingerprint(),
        }
