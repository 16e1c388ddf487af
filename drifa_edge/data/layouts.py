"""Open the on-disk layouts of a labelled set: class folders (optionally under split folders),
``labels.csv`` (+ optional ``classes.txt``) and MedMNIST ``.npz``. See ``sources`` for the rules."""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from drifa_edge.data.labelled import LabelledSet, Sample
from drifa_edge.data.readers import IMAGE_SUFFIXES, array_to_image
from drifa_edge.data.splits import SPLITS, UNSPLIT_NAMES, assign_splits, canonical_split
from drifa_edge.errors import BadInputError, suggest

LABELS_FILE = "labels.csv"
CLASSES_FILE = "classes.txt"
_CSV_COLUMNS = {
    "file": ("file", "path", "filename", "image"),
    "label": ("label", "class"),
    "split": ("split",),
    "case_id": ("case_id", "case", "patient_id"),
}


def visible_dirs(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith((".", "__")))


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        f
        for f in folder.rglob("*")
        if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith(".")
    )


def _class_sort_key(name: str) -> tuple:
    """Numeric labels sort as numbers ("2" < "10"), others alphabetically."""
    return (0, int(name), "") if name.lstrip("-").isdigit() else (1, 0, name)


def open_folders(name: str, root: Path, subdirs: list[Path], **split: Any) -> LabelledSet:
    split_dirs = {d: canonical_split(d.name) for d in subdirs}
    if any(split_dirs.values()):
        others = [d.name for d, s in split_dirs.items() if s is None]
        if others:
            raise BadInputError(
                f"{root}: mixes split folders ({[d.name for d, s in split_dirs.items() if s]}) "
                f"with other folders "
                f"({others}); put every class folder inside a split folder, or remove the split folders"
            )
        seen: dict[str, str] = {}
        for d, s in split_dirs.items():
            if s in seen:
                raise BadInputError(
                    f"{root}: folders {seen[s]!r} and {d.name!r} both mean split {s!r}; merge them"
                )
            seen[s] = d.name
        layout = [(d, split_dirs[d]) for d in subdirs]
    else:
        layout = [(root, None)]
    found: list[tuple[Path, str, str | None]] = []  # (file, class, split)
    for folder, split_name in layout:
        class_dirs = visible_dirs(folder)
        if not class_dirs:
            raise BadInputError(
                f"{folder}: no class subfolders; expected {folder}/<class>/<image> "
                f"(or a {LABELS_FILE} with columns file,label)"
            )
        for cdir in class_dirs:
            files = _image_files(cdir)
            if not files:
                raise BadInputError(
                    f"{cdir}: empty class folder (no {', '.join(IMAGE_SUFFIXES)} files); "
                    "add images or remove it"
                )
            found += [(f, cdir.name, split_name) for f in files]
    classes = tuple(sorted({c for _, c, _ in found}, key=_class_sort_key))
    index = {c: k for k, c in enumerate(classes)}
    rows = [(f.relative_to(root).as_posix(), index[c], s, None) for f, c, s in found]
    return _build(name, classes, rows, root=root, kind="folder", **split)


def _csv_column(header: list[str], role: str) -> str | None:
    for alias in _CSV_COLUMNS[role]:
        if alias in header:
            return alias
    return None


def open_csv(name: str, root: Path, csv_path: Path, **split: Any) -> LabelledSet:
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            reader.fieldnames = [h.strip().lower() for h in (reader.fieldnames or [])]
            header = list(reader.fieldnames)
            table = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise BadInputError(f"{csv_path}: cannot read the CSV ({e})") from e
    cols = {role: _csv_column(header, role) for role in _CSV_COLUMNS}
    if cols["file"] is None or cols["label"] is None:
        raise BadInputError(
            f"{csv_path}: needs columns 'file' and 'label' (optional: split, case_id); found {header}"
        )
    if not table:
        raise BadInputError(f"{csv_path}: no rows; list one image per line as file,label[,split][,case_id]")
    raw = []
    for line, row in enumerate(table, start=2):
        file, label = (row.get(cols["file"]) or "").strip(), (row.get(cols["label"]) or "").strip()
        if not file or not label:
            raise BadInputError(f"{csv_path}:{line}: empty file or label in row {row}")
        split_value = (row.get(cols["split"]) or "").strip() if cols["split"] else ""
        split_name = canonical_split(split_value)
        if split_name is None and split_value.lower() not in UNSPLIT_NAMES:
            raise BadInputError(
                f"{csv_path}:{line}: unknown split {split_value!r}; use train, val, test "
                "(or leave it empty / 'all' for a seeded split)"
            )
        case = (row.get(cols["case_id"]) or "").strip() if cols["case_id"] else ""
        raw.append((line, file, label, split_name, case or None))
    classes = _csv_classes(csv_path, [r[2] for r in raw])
    index = {c: k for k, c in enumerate(classes)}
    rows, missing, seen = [], [], set()
    for line, file, label, split_name, case in raw:
        if label not in index:
            raise BadInputError(
                f"{csv_path}:{line}: unknown label {label!r}; classes are {list(classes)}."
                f"{suggest(label, classes)}"
            )
        if file in seen:
            raise BadInputError(f"{csv_path}:{line}: file {file!r} is listed twice")
        seen.add(file)
        if not (root / file).is_file():
            missing.append(f"{root / file} (line {line})")
        rows.append((file, index[label], split_name, case))
    if missing:
        raise BadInputError(
            f"{csv_path}: {len(missing)} listed file(s) not found, e.g. {missing[0]}"
            + (f", {missing[1]}" if len(missing) > 1 else "")
            + "; fix the paths (relative to the CSV's folder) or remove the rows"
        )
    if len({r[2] is None for r in rows}) > 1:
        raise BadInputError(
            f"{csv_path}: some rows name a split and others do not; give every row a split, or none "
            "(then a seeded stratified split is made)"
        )
    return _build(name, classes, rows, root=root, kind=LABELS_FILE, **split)


def _csv_classes(csv_path: Path, labels: list[str]) -> tuple[str, ...]:
    classes_txt = csv_path.parent / CLASSES_FILE
    if classes_txt.is_file():
        names = [ln.strip() for ln in classes_txt.read_text(encoding="utf-8").splitlines() if ln.strip()]
        if len(set(names)) != len(names) or len(names) < 2:
            raise BadInputError(
                f"{classes_txt}: needs at least 2 distinct class names, one per line; got {names}"
            )
        return tuple(names)
    return tuple(sorted(set(labels), key=_class_sort_key))


def open_npz(name: str, path: Path, **split: Any) -> LabelledSet:
    try:
        data = np.load(path, allow_pickle=False)
        keys = set(data.files)
    except (OSError, ValueError, EOFError) as e:
        raise BadInputError(f"{path}: cannot read the .npz ({e}); expected a MedMNIST-style archive") from e
    present = [s for s in SPLITS if f"{s}_images" in keys and f"{s}_labels" in keys]
    if not present:
        raise BadInputError(
            f"{path}: no '<split>_images'/'<split>_labels' arrays (MedMNIST layout); "
            f"found keys {sorted(keys)}"
        )
    arrays: dict[str, np.ndarray] = {}
    rows = []
    max_label = 0
    try:
        for s in present:
            images, labels = data[f"{s}_images"], np.asarray(data[f"{s}_labels"])
            if labels.ndim == 2 and labels.shape[1] == 1:
                labels = labels[:, 0]
            if labels.ndim != 1 or len(labels) != len(images) or images.ndim not in (3, 4):
                raise BadInputError(
                    f"{path}: {s}_images {images.shape} / {s}_labels {labels.shape} "
                    "are not N images with one "
                    "label each (multi-label sets are not supported)"
                )
            if not np.issubdtype(labels.dtype, np.integer) or (len(labels) and labels.min() < 0):
                raise BadInputError(f"{path}: {s}_labels must be non-negative integers, got {labels.dtype}")
            if len(images):
                array_to_image(images[0], f"{path}:{s}_images[0]")  # dtype/shape check once per split
            if np.issubdtype(images.dtype, np.floating) and not np.isfinite(images).all():
                raise BadInputError(f"{path}: {s}_images contains NaN or Inf values")
            for i in range(len(images)):
                key = f"{s}/{i:06d}"
                arrays[key] = images[i]
                rows.append((key, int(labels[i]), s, None))
            max_label = max(max_label, int(labels.max()) if len(labels) else 0)
    except BadInputError:
        raise
    except (ValueError, OSError, EOFError) as e:  # e.g. pickled object arrays, a truncated archive
        raise BadInputError(f"{path}: cannot read the arrays ({e})") from e
    if "classes" in keys and data["classes"].dtype.kind == "U":
        classes = tuple(str(c) for c in data["classes"])
    else:
        classes = tuple(str(i) for i in range(max(max_label + 1, 2)))
    if max_label >= len(classes):
        raise BadInputError(f"{path}: label {max_label} but only {len(classes)} class names")
    return _build(name, classes, rows, root=path.parent, kind="npz", arrays=arrays, source=path, **split)


def _build(
    name: str,
    classes: tuple[str, ...],
    rows: list[tuple[str, int, str | None, str | None]],
    root: Path,
    kind: str,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    arrays: Mapping[str, np.ndarray] | None = None,
    source: Path | None = None,
) -> LabelledSet:
    if not rows:
        raise BadInputError(f"{root}: no images found for data set {name!r}")
    if len(classes) < 2:
        raise BadInputError(
            f"{source or root}: data set {name!r} has one class {list(classes)}; need at least 2"
        )
    samples = [Sample(key, label, split or "train", case) for key, label, split, case in rows]
    given = {split for _, _, split, _ in rows}
    samples, split_source = assign_splits(samples, given, seed, val_fraction, test_fraction)
    options = {"seed": seed, "val_fraction": val_fraction, "test_fraction": test_fraction}
    if source is not None:
        options["file"] = source.name
    return LabelledSet(name, classes, samples, root, split_source, arrays, kind, options)
