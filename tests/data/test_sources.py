"""sources: layouts, splits, errors, fingerprints and evaluation arrays."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from drifa_edge.artifact.card import default_card
from drifa_edge.data.sources import (
    LabelledSet,
    load_datasets,
    load_eval_arrays,
    open_dataset,
    parse_data_options,
)
from drifa_edge.errors import BadInputError, ConfigError
from drifa_edge.model.config import ModelConfig, TaskSpec


def _png(path: Path, value: int, size: int = 8, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = 3 if mode == "RGB" else 1
    array = np.full((size, size, channels), value % 256, np.uint8)
    Image.fromarray(array.squeeze(-1) if channels == 1 else array).save(path)


def _class_folders(root: Path, counts: dict[str, int], mode: str = "RGB") -> Path:
    for k, (cls, n) in enumerate(counts.items()):
        for i in range(n):
            _png(root / cls / f"{i:03d}.png", 40 * k + i, mode=mode)
    return root


def _splits(ds: LabelledSet) -> dict[str, Counter]:
    return {
        sp: Counter(ds.classes[s.label] for s in ds.samples if s.split == sp)
        for sp in ("train", "val", "test")
    }


# ---------------------------------------------------------------- layouts and splits


def test_class_folders_get_a_seeded_stratified_split(tmp_path: Path) -> None:
    root = _class_folders(tmp_path / "d", {"benign": 20, "malignant": 10})
    ds = open_dataset("derm", root, seed=3)
    assert ds.classes == ("benign", "malignant") and len(ds) == 30 and ds.kind == "folder"
    # per class round(n * 0.15) in val and test: 20 -> 3/3/14, 10 -> 2/2/6 (round half to even: 1.5 -> 2)
    split = _splits(ds)
    assert split["val"] == {"benign": 3, "malignant": 2} and split["test"] == {"benign": 3, "malignant": 2}
    assert "seed=3" in ds.split_source and "no split given" in ds.split_source
    again, other = open_dataset("derm", root, seed=3), open_dataset("derm", root, seed=4)
    assert [s.split for s in again.samples] == [s.split for s in ds.samples]
    assert [s.split for s in other.samples] != [s.split for s in ds.samples]
    image = ds.load(0)
    assert image.shape == (8, 8, 3) and image.dtype == np.float32


def test_tiny_class_still_reaches_every_split(tmp_path: Path) -> None:
    ds = open_dataset("t", _class_folders(tmp_path, {"a": 3, "b": 40}))
    assert _splits(ds)["train"]["a"] == 1 and _splits(ds)["val"]["a"] == 1 and _splits(ds)["test"]["a"] == 1


def test_nested_split_folders_case_insensitive_and_val_carved(tmp_path: Path) -> None:
    _class_folders(tmp_path / "Training", {"a": 20, "b": 20})
    _class_folders(tmp_path / "Testing", {"a": 4, "b": 3})
    ds = open_dataset("x", tmp_path, seed=0)
    split = _splits(ds)
    assert split["test"] == {"a": 4, "b": 3}  # given test kept
    assert split["val"] == {"a": 3, "b": 3} and split["train"] == {"a": 17, "b": 17}  # val carved from train
    assert "carved from train" in ds.split_source
    assert all(s.key.startswith("Testing/") for s in ds.samples if s.split == "test")


def test_all_three_split_folders_are_used_as_given(tmp_path: Path) -> None:
    for name, n in (("train", 5), ("valid", 2), ("TEST", 2)):
        _class_folders(tmp_path / name, {"a": n, "b": n})
    ds = open_dataset("x", tmp_path)
    assert ds.split_source == "given" and ds.counts()["val"] == {"a": 2, "b": 2}
    assert ds.counts()["total"] == {"a": 9, "b": 9}


def test_folder_errors(tmp_path: Path) -> None:
    root = _class_folders(tmp_path / "e", {"a": 2})
    (root / "b").mkdir()
    with pytest.raises(BadInputError, match=r"empty class folder") as info:
        open_dataset("x", root)
    assert str(root / "b") in str(info.value)
    (tmp_path / "flat").mkdir()
    _png(tmp_path / "flat" / "x.png", 1)
    with pytest.raises(BadInputError, match="no class subfolders"):
        open_dataset("x", tmp_path / "flat")
    _class_folders(tmp_path / "mixed" / "train", {"a": 2, "b": 2})
    _class_folders(tmp_path / "mixed" / "c", {"z": 1})
    with pytest.raises(BadInputError, match="mixes split folders"):
        open_dataset("x", tmp_path / "mixed")
    with pytest.raises(ConfigError, match="does not exist"):
        open_dataset("x", tmp_path / "nope")
    (tmp_path / "w.txt").write_text("x")
    with pytest.raises(ConfigError, match="unsupported file"):
        open_dataset("x", tmp_path / "w.txt")
    with pytest.raises(BadInputError, match="one class"):
        open_dataset("x", _class_folders(tmp_path / "one", {"a": 3}))


def _labels_csv(root: Path, rows: list[str], header: str = "file,label,split") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "labels.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    return root


def test_labels_csv_with_split_and_extra_columns(tmp_path: Path) -> None:
    rows = []
    for i in range(12):
        _png(tmp_path / "img" / f"{i}.png", i)
        split = "train" if i < 8 else ("Validation" if i < 10 else "test")
        rows.append(f"img/{i}.png,{'nevus' if i % 2 else 'melanoma'},{split},src/{i}")
    ds = open_dataset("derm", _labels_csv(tmp_path, rows, "file,label,split,source_path"))
    assert ds.classes == ("melanoma", "nevus") and ds.kind == "labels.csv" and ds.split_source == "given"
    assert ds.counts()["val"] == {"melanoma": 1, "nevus": 1}
    assert (
        open_dataset("derm", tmp_path / "labels.csv").fingerprint() == ds.fingerprint()
    )  # the csv path itself


def test_labels_csv_numeric_labels_sort_as_numbers(tmp_path: Path) -> None:
    rows = []
    for i in range(30):
        _png(tmp_path / f"{i}.png", i)
        rows.append(f"{i}.png,{[2, 10, 1][i % 3]}")
    ds = open_dataset("x", _labels_csv(tmp_path, rows, "file,label"))
    assert ds.classes == ("1", "2", "10") and "no split given" in ds.split_source


def test_labels_csv_errors(tmp_path: Path) -> None:
    _png(tmp_path / "a.png", 1)
    _png(tmp_path / "b.png", 2)
    (tmp_path / "classes.txt").write_text("melanoma\nnevus\n")
    _labels_csv(tmp_path, ["a.png,melanoma,train", "b.png,nevvus,test"])
    with pytest.raises(BadInputError, match=r"labels.csv:3: unknown label 'nevvus'.*Did you mean 'nevus'"):
        open_dataset("x", tmp_path)
    _labels_csv(tmp_path, ["a.png,melanoma,train", "gone.png,nevus,test"])
    with pytest.raises(BadInputError, match="not found") as info:
        open_dataset("x", tmp_path)
    assert str(tmp_path / "gone.png") in str(info.value)
    _labels_csv(tmp_path, ["a.png,melanoma,train", "b.png,nevus,holdout"])
    with pytest.raises(BadInputError, match="unknown split 'holdout'"):
        open_dataset("x", tmp_path)
    _labels_csv(tmp_path, ["a.png,melanoma,train", "b.png,nevus,"])
    with pytest.raises(BadInputError, match="some rows name a split"):
        open_dataset("x", tmp_path)
    _labels_csv(tmp_path, ["a.png,melanoma", "a.png,nevus"], "file,label")
    with pytest.raises(BadInputError, match="listed twice"):
        open_dataset("x", tmp_path)
    _labels_csv(tmp_path, ["a.png"], "image_path")
    with pytest.raises(BadInputError, match="needs columns 'file' and 'label'"):
        open_dataset("x", tmp_path)
    _labels_csv(tmp_path, [], "file,label")
    with pytest.raises(BadInputError, match="no rows"):
        open_dataset("x", tmp_path)


def test_unreadable_listed_file_names_the_file_on_load(tmp_path: Path) -> None:
    for i in range(6):
        _png(tmp_path / f"{i}.png", i)
    (tmp_path / "0.png").write_bytes(b"not a png")
    ds = open_dataset("x", _labels_csv(tmp_path, [f"{i}.png,{'ab'[i % 2]},train" for i in range(6)]))
    index = next(i for i, s in enumerate(ds.samples) if s.key == "0.png")
    with pytest.raises(BadInputError, match="cannot decode") as info:
        ds.load(index)
    assert str(tmp_path / "0.png") in str(info.value)


def test_case_ids_never_straddle_splits(tmp_path: Path) -> None:
    rows = []
    for i in range(80):
        _png(tmp_path / f"{i}.png", i)
        rows.append(f"{i}.png,{'ab'[(i // 4) % 2]},,case{i // 4}")  # 4 images per case
    ds = open_dataset("x", _labels_csv(tmp_path, rows, "file,label,split,case_id"), seed=1)
    assert ds.has_case_ids
    split_of_case: dict[str, set[str]] = {}
    for s in ds.samples:
        split_of_case.setdefault(s.case_id, set()).add(s.split)
    assert all(len(v) == 1 for v in split_of_case.values())
    assert {sp for v in split_of_case.values() for sp in v} == {"train", "val", "test"}


def _npz(path: Path, splits: dict[str, int], channels: int = 0) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in splits.items():
        shape = (n, 28, 28) + ((channels,) if channels else ())
        arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).astype(np.uint8)[:, None]  # MedMNIST (N, 1)
    np.savez(path, **arrays)
    return path


def test_npz_medmnist_layout(tmp_path: Path) -> None:
    path = _npz(tmp_path / "chest.npz", {"train": 20, "val": 6, "test": 8})
    ds = open_dataset("chest", path)
    assert ds.classes == ("0", "1") and ds.split_source == "given" and ds.kind == "npz"
    assert ds.counts()["test"] == {"0": 4, "1": 4}
    with np.load(path) as data:
        i = next(k for k, s in enumerate(ds.samples) if s.key == "test/000003")
        np.testing.assert_array_equal(ds.load(i)[..., 0], data["test_images"][3] / np.float32(255))
        assert ds.samples[i].label == int(data["test_labels"][3, 0])
    assert open_dataset("chest", tmp_path).fingerprint() == ds.fingerprint()  # a folder holding one .npz
    rgb = open_dataset("c", _npz(tmp_path / "rgb.npz", {"train": 20, "test": 6}, channels=3))
    assert rgb.load(0).shape == (28, 28, 3) and "carved from train" in rgb.split_source
    assert rgb.counts()["val"] == {"0": 2, "1": 2}


def test_npz_errors(tmp_path: Path) -> None:
    np.savez(tmp_path / "bad.npz", x=np.zeros(3))
    with pytest.raises(BadInputError, match="MedMNIST layout"):
        open_dataset("x", tmp_path / "bad.npz")
    np.savez(
        tmp_path / "ml.npz",
        train_images=np.zeros((4, 8, 8), np.uint8),
        train_labels=np.zeros((4, 3), np.uint8),
    )
    with pytest.raises(BadInputError, match="multi-label"):
        open_dataset("x", tmp_path / "ml.npz")
    np.savez(
        tmp_path / "obj.npz", train_images=np.array([None] * 4, dtype=object), train_labels=np.zeros(4, int)
    )
    with pytest.raises(BadInputError, match="obj.npz"):
        open_dataset("x", tmp_path / "obj.npz")


# ---------------------------------------------------------------- identity


def test_fingerprint_tracks_content_labels_and_subset(tmp_path: Path) -> None:
    root = _class_folders(tmp_path / "d", {"a": 5, "b": 5})
    first = open_dataset("x", root).fingerprint()
    assert open_dataset("renamed", root).fingerprint() == first  # the task name is not data
    assert open_dataset("x", root).subset("train").fingerprint() != first
    _png(root / "a" / "000.png", 99)  # same name, other pixels
    assert open_dataset("x", root).fingerprint() != first
    described = open_dataset("x", root).describe()
    assert described["classes"] == ["a", "b"] and described["num_samples"] == 10
    assert described["path"] == str(root) and len(described["fingerprint"]) == 64
    assert set(described) >= {"split_source", "counts", "kind", "options"}


def test_subset_rejects_unknown_split(tmp_path: Path) -> None:
    ds = open_dataset("x", _class_folders(tmp_path, {"a": 5, "b": 5}))
    with pytest.raises(ConfigError, match="Did you mean 'val'"):
        ds.subset("vall")


# ---------------------------------------------------------------- options


def test_parse_data_options(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    assert parse_data_options([f"derm={a}", f"scan={b}"]) == [("derm", str(a)), ("scan", str(b))]
    assert parse_data_options(["synthetic"]) == [("synthetic", "")]
    cases = {
        "expected NAME=PATH": [str(a)],
        "given twice": [f"derm={a}", f"derm={b}"],
        "does not exist": [f"derm={tmp_path / 'missing'}"],
        "path after '=' is empty": ["derm="],
        "letters, digits": [f"de rm={a}"],
        "cannot be combined": ["synthetic", f"derm={a}"],
        "no data given": [],
    }
    for message, values in cases.items():
        with pytest.raises(ConfigError, match=message):
            parse_data_options(values)


def test_load_datasets_synthetic_and_folders(tmp_path: Path) -> None:
    sets = load_datasets(["synthetic"], synthetic_kwargs={"n_per_class": 4, "size": 16, "tasks": 3})
    assert list(sets) == ["derm", "scan", "micro"] and len(sets["derm"]) == 12
    root = _class_folders(tmp_path / "d", {"a": 4, "b": 4})
    assert list(load_datasets([f"derm={root}", f"scan={root}"])) == ["derm", "scan"]


# ---------------------------------------------------------------- evaluation arrays


def _eval_card(derm_classes: tuple[str, ...], scan_classes: tuple[str, ...]):
    cfg = ModelConfig(
        tasks=(TaskSpec("derm", derm_classes, 3), TaskSpec("scan", scan_classes, 1)),
        image_size=32,
        width=0.125,
    )
    return default_card(cfg)


def test_eval_arrays_cycle_shorter_set_and_mask_repeats(tmp_path: Path) -> None:
    _class_folders(tmp_path / "derm" / "train", {"a": 2, "b": 2})
    _class_folders(tmp_path / "derm" / "test", {"a": 2, "b": 1})  # 3 test images
    _class_folders(tmp_path / "scan" / "train", {"x": 2, "y": 2}, mode="L")
    _class_folders(tmp_path / "scan" / "test", {"x": 3, "y": 2}, mode="L")  # 5 test images
    card = _eval_card(("b", "a"), ("x", "y", "z"))  # card order differs from the folders' order
    values = [f"scan={tmp_path / 'scan'}", f"derm={tmp_path / 'derm'}"]
    images, labels, ids = load_eval_arrays(values, card)
    assert [a.shape for a in images] == [(5, 3, 32, 32), (5, 1, 32, 32)]  # card task order
    assert len(ids) == 5 and all("derm:" in i and "scan:" in i for i in ids)
    derm, scan = labels["derm"], labels["scan"]
    assert (derm == -1).sum() == 2 and sorted(derm[derm >= 0].tolist()) == [0, 1, 1]  # 'a' -> 1, 'b' -> 0
    assert sorted(scan.tolist()) == [0, 0, 0, 1, 1]
    # each derm image is scored once: the keys of scored rows are distinct
    scored = [i.split(" | ")[0] for i, lab in zip(ids, derm, strict=True) if lab >= 0]
    assert len(set(scored)) == 3
    # rows are preprocessed with the card's spec: the first image is a constant (value / 255 - .5) / .5
    first_key = ids[0].split(" | ")[0].split(":", 1)[1]
    value = np.asarray(Image.open(tmp_path / "derm" / first_key))[0, 0, 0] / 255.0
    np.testing.assert_allclose(images[0][0], (value - 0.5) / 0.5, atol=1e-6)
    limited = load_eval_arrays(values, card, limit=2)
    assert limited[0][0].shape[0] == 2 and limited[2] == ids[:2]


def test_eval_arrays_errors(tmp_path: Path) -> None:
    _class_folders(tmp_path / "derm", {"a": 8, "b": 8})
    _class_folders(tmp_path / "scan", {"x": 8, "y": 8}, mode="L")
    values = [f"derm={tmp_path / 'derm'}", f"scan={tmp_path / 'scan'}"]
    with pytest.raises(
        ConfigError, match=r"data sets \['derm', 'xray'\] do not match the model's tasks \['derm', 'scan'\]"
    ):
        load_eval_arrays(values[:1] + [f"xray={tmp_path / 'scan'}"], _eval_card(("a", "b"), ("x", "y")))
    with pytest.raises(ConfigError, match="class 'b' is not one of the model's classes"):
        load_eval_arrays(values, _eval_card(("a", "c"), ("x", "y")))


def test_eval_arrays_skip_unreadable_files(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _class_folders(tmp_path / "derm" / "test", {"a": 3, "b": 3})
    _class_folders(tmp_path / "scan" / "test", {"x": 3, "y": 3}, mode="L")
    (tmp_path / "derm" / "test" / "a" / "001.png").write_bytes(b"broken")
    values = [f"derm={tmp_path / 'derm'}", f"scan={tmp_path / 'scan'}"]
    with caplog.at_level(logging.WARNING):
        images, labels, ids = load_eval_arrays(values, _eval_card(("a", "b"), ("x", "y")))
    assert "001.png" in caplog.text
    assert images[0].shape[0] == 6 and (labels["derm"] >= 0).sum() == 5 and (labels["scan"] >= 0).sum() == 6
    assert not any("a/001.png" in i for i in ids)


def test_eval_arrays_join_on_case_id(tmp_path: Path) -> None:
    for task, mode in (("derm", "RGB"), ("scan", "L")):
        rows = []
        for i in range(6):
            _png(tmp_path / task / f"{i}.png", i, mode=mode)
            case = f"p{i}" if task == "derm" else f"p{i + 2}"  # p2..p5 in both sets
            rows.append(f"{i}.png,{'ab'[i % 2] if task == 'derm' else 'xy'[i % 2]},test,{case}")
        _labels_csv(tmp_path / task, rows, "file,label,split,case_id")
    values = [f"derm={tmp_path / 'derm'}", f"scan={tmp_path / 'scan'}"]
    images, labels, ids = load_eval_arrays(values, _eval_card(("a", "b"), ("x", "y")))
    assert sorted(ids) == ["p2", "p3", "p4", "p5"] and images[1].shape == (4, 1, 32, 32)
    for case, d, s in zip(ids, labels["derm"], labels["scan"], strict=True):
        k = int(case[1:])
        assert d == k % 2 and s == (k - 2) % 2  # both labels belong to the same case


def test_eval_arrays_synthetic_follow_the_card(tmp_path: Path) -> None:
    sets = load_datasets(["synthetic"], synthetic_kwargs={"n_per_class": 10, "size": 16})
    cfg = ModelConfig(
        tasks=tuple(TaskSpec(n, s.classes, 3 if n == "derm" else 1) for n, s in sets.items()), image_size=32
    )
    card = default_card(cfg, data={"sets": {n: s.describe() for n, s in sets.items()}})
    images, labels, _ = load_eval_arrays(["synthetic"], card)
    assert images[0].shape == (
        sets["derm"].counts()["test"]["blob"] * 3,
        3,
        32,
        32,
    )  # n_per_class from the card
    assert (labels["derm"] >= 0).all()


# ---------------------------------------------------------------- shared real data (when present)

SKIN_CLASSES = (
    "actinic keratosis",
    "basal cell carcinoma",
    "dermatofibroma",
    "melanoma",
    "nevus",
    "pigmented benign keratosis",
    "seborrheic keratosis",
    "squamous cell carcinoma",
    "vascular lesion",
)


@pytest.mark.realdata
def test_shared_skin_isic9_labels_csv_with_split(shared_data: Path) -> None:
    ds = open_dataset("derm", shared_data / "skin_isic9")
    assert ds.classes == SKIN_CLASSES and len(ds) == 2359 and ds.kind == "labels.csv"
    counts = ds.counts()
    assert sum(counts["test"].values()) == 118  # given test split kept
    assert counts["test"]["seborrheic keratosis"] == 3
    assert sum(counts["train"].values()) + sum(counts["val"].values()) == 2241  # val carved from train
    assert "carved from train" in ds.split_source
    image = ds.load(0)
    assert image.shape == (180, 180, 3) and image.dtype == np.float32


@pytest.mark.realdata
def test_shared_blood_pbc8_no_split_gets_stratified(shared_data: Path) -> None:
    ds = open_dataset("blood", shared_data / "blood_pbc8", seed=0)
    assert len(ds.classes) == 8 and ds.classes[0] == "basophil" and len(ds) == 2000
    counts = ds.counts()
    assert set(counts["val"].values()) == {38} and set(counts["test"].values()) == {38}  # round(250 * .15)
    assert "no split given" in ds.split_source
    assert ds.load(0).shape[-1] == 3


@pytest.mark.realdata
def test_shared_chest_npz(shared_data: Path) -> None:
    ds = open_dataset("chest", shared_data / "chest_xray_pneumoniamnist")
    assert ds.classes == ("0", "1") and ds.split_source == "given"
    assert {sp: sum(c.values()) for sp, c in ds.counts().items()} == {
        "train": 2428,
        "val": 270,
        "test": 468,
        "total": 3166,
    }
    assert ds.load(0).shape == (28, 28, 1)


@pytest.mark.realdata
def test_shared_pap_smear_and_eval_pairing(shared_data: Path) -> None:
    pap = open_dataset("pap", shared_data / "pap_smear_cric6")
    assert len(pap.classes) == 6 and len(pap) == 443 and pap.counts()["total"]["SCC"] == 43
    assert pap.load(0).shape == (100, 100, 3)
    chest = open_dataset("chest", shared_data / "chest_xray_pneumoniamnist")
    cfg = ModelConfig(
        tasks=(TaskSpec("pap", pap.classes, 3), TaskSpec("chest", chest.classes, 1)),
        image_size=32,
        width=0.125,
    )
    values = [f"pap={shared_data / 'pap_smear_cric6'}", f"chest={shared_data / 'chest_xray_pneumoniamnist'}"]
    images, labels, _ = load_eval_arrays(values, default_card(cfg), split="test", limit=100)
    assert images[0].shape == (100, 3, 32, 32) and images[1].shape == (100, 1, 32, 32)
    n_pap_test = sum(pap.counts()["test"].values())  # fewer than 100: the pap set cycles
    assert (labels["pap"] >= 0).sum() == n_pap_test and (labels["chest"] >= 0).all()
