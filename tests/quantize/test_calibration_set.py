"""Calibration cases: drawn reproducibly, preprocessed exactly as at inference, and
fingerprinted so that other data never passes for the same calibration."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from drifa_edge.artifact.card import default_card
from drifa_edge.data.preprocess import preprocess
from drifa_edge.data.sources import load_datasets
from drifa_edge.errors import ConfigError
from drifa_edge.model.config import ModelConfig, TaskSpec
from drifa_edge.quantize.calibration_set import calibration_from_sets, load_calibration_set

SYNTH = {"tasks": 2, "size": 32, "n_per_class": 8}


def _card(names=("derm", "scan"), channels=(3, 1), classes=(("blob", "ring", "cross"),) * 2, size=32):
    tasks = tuple(TaskSpec(n, c, ch) for n, c, ch in zip(names, classes, channels, strict=True))
    return default_card(ModelConfig(tasks=tasks, image_size=size, width=0.125))


def _synthetic_card():
    return _card(classes=(("blob", "ring", "cross"), ("stripes", "checker", "spots")))


def test_images_are_the_card_preprocessing_of_the_chosen_samples():
    card = _synthetic_card()
    sets = load_datasets(["synthetic"], seed=0, synthetic_kwargs=SYNTH)
    calib = calibration_from_sets(sets, card, subset=5, seed=3)
    assert calib.cases == 5 and calib.tasks == ("derm", "scan")
    for k, task in enumerate(calib.tasks):
        assert calib.images[k].shape == (5, card.preprocess[task].channels, 32, 32)
        by_key = {s.key: i for i, s in enumerate(sets[task].samples)}
        for row, key in enumerate(calib.keys[k]):
            i = by_key[key]
            expected = preprocess(sets[task].load(i), card.preprocess[task])
            np.testing.assert_array_equal(calib.images[k][row], expected)
            assert sets[task].samples[i].split == "train"
            assert calib.labels[k][row] == sets[task].samples[i].label  # same class order as the card


def test_digest_is_reproducible_and_tracks_subset_seed_and_split():
    card = _synthetic_card()
    sets = load_datasets(["synthetic"], seed=0, synthetic_kwargs=SYNTH)
    a = calibration_from_sets(sets, card, subset=5, seed=0)
    assert calibration_from_sets(sets, card, subset=5, seed=0).digest == a.digest
    others = {
        calibration_from_sets(sets, card, subset=5, seed=1).digest,
        calibration_from_sets(sets, card, subset=4, seed=0).digest,
        calibration_from_sets(sets, card, subset=5, seed=0, split="val").digest,
    }
    assert a.digest not in others and len(others) == 3
    prov = a.provenance(seed=0, split="train", preset="performance")
    assert prov["sha256"] == a.digest and prov["subset"] == 5 and prov["preset"] == "performance"


def test_preprocessing_is_part_of_the_digest():
    sets = load_datasets(["synthetic"], seed=0, synthetic_kwargs=SYNTH)
    card = _synthetic_card()
    spec = card.preprocess["derm"]
    other = card.replace(
        preprocess={**card.preprocess, "derm": type(spec)(spec.size, 3, (0.4,) * 3, (0.3,) * 3)}
    )
    a = calibration_from_sets(sets, card, subset=3, seed=0)
    b = calibration_from_sets(sets, other, subset=3, seed=0)
    assert a.keys == b.keys and a.digest != b.digest


def _folder_set(root, name, colours):
    root.mkdir(parents=True)
    rows = ["file,label,split"]
    for i, colour in enumerate(colours):
        Image.new("RGB", (20, 20), colour).save(root / f"img{i}.png")
        rows.append(f"img{i}.png,{'ab'[i % 2]},train")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def test_file_contents_are_hashed(tmp_path):
    colours = [(10 * i, 100, 200 - 10 * i) for i in range(6)]
    a = _folder_set(tmp_path / "a", "skin", colours)
    b = _folder_set(tmp_path / "b", "blood", colours)
    card = _card(names=("skin", "blood"), channels=(3, 3), classes=(("a", "b"),) * 2)
    values = [f"skin={a}", f"blood={b}"]
    before = load_calibration_set(values, card, subset=6, seed=0)
    # same file names, one file's bytes changed (a PNG text chunk: the pixels stay the same)
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("note", "edited")
    Image.open(a / "img3.png").copy().save(a / "img3.png", pnginfo=info)
    after = load_calibration_set(values, card, subset=6, seed=0)
    assert before.keys == after.keys
    np.testing.assert_array_equal(before.images[0], after.images[0])
    assert before.digest != after.digest


def test_task_names_must_match_for_real_data(tmp_path):
    a = _folder_set(tmp_path / "a", "skin", [(1, 2, 3), (4, 5, 6)])
    card = _card(names=("derm", "scan"), channels=(3, 3), classes=(("a", "b"),) * 2)
    with pytest.raises(ConfigError, match="NAME=PATH"):
        load_calibration_set([f"skin={a}", f"blood={a}"], card, subset=2, seed=0)


def test_synthetic_calibration_maps_onto_a_model_with_other_task_names():
    card = _card(names=("task0", "task1"), channels=(3, 3), classes=(("c0", "c1"),) * 2)
    calib = load_calibration_set(["synthetic"], card, subset=4, seed=0)
    assert calib.tasks == ("task0", "task1")
    assert calib.images[1].shape == (4, 3, 32, 32)  # gray 'scan' images, converted to the card's RGB
    assert all((y == -1).all() for y in calib.labels)  # classes differ: unlabelled for accuracy control
