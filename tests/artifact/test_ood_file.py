"""``ood.npz``: written pickle-free, hashed in the card, refused when tampered or unlisted."""

from __future__ import annotations

import json

import numpy as np
import pytest

from drifa_edge.artifact.card import CARD_FILE, default_card, sha256_file, write_card
from drifa_edge.artifact.ood import OOD_FILE, PrefixDensity, TaskDensity, read_ood, write_ood
from drifa_edge.errors import ArtifactError, ConfigError
from drifa_edge.model.config import ModelConfig, TaskSpec

CFG = ModelConfig(tasks=(TaskSpec("a", ("x", "y")), TaskSpec("b", ("u", "v", "w"), channels=1)), width=0.125)


def _density(d: int = 4, start: int = 0, seed: int = 0) -> TaskDensity:
    rng = np.random.default_rng(seed)
    m = rng.normal(size=(d, d))
    return TaskDensity(
        "branch", (start, start + d), np.array([0, 1]), rng.normal(size=(2, d)), m @ m.T, 3.5, 0.05,
        {"fit_cases": 10},
    )  # fmt: skip


@pytest.fixture
def folder(tmp_path):
    write_card(default_card(CFG), tmp_path)
    return tmp_path


def test_round_trip_is_pickle_free_and_hashed(folder):
    written = {"a": _density(), "b": _density(start=4, seed=1)}
    write_ood(folder, written)
    card = json.loads((folder / CARD_FILE).read_text())
    assert len(card["files"][OOD_FILE]) == 64
    with np.load(folder / OOD_FILE, allow_pickle=False) as z:  # raises on any object array
        assert all(z[k].dtype != object for k in z.files)
    read = read_ood(folder)
    for task, d in written.items():
        np.testing.assert_array_equal(read[task].means, d.means)
        np.testing.assert_array_equal(read[task].precision, d.precision)
        assert read[task].columns == d.columns and read[task].threshold == d.threshold
        assert read[task].fit == {"fit_cases": 10}


def test_absent_file_means_no_ood(folder):
    assert read_ood(folder) is None


def test_tampered_or_unlisted_file_is_refused(folder):
    write_ood(folder, {"a": _density()})
    data = bytearray((folder / OOD_FILE).read_bytes())
    data[-30] ^= 1
    (folder / OOD_FILE).write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="does not match the model card"):
        read_ood(folder)
    card = json.loads((folder / CARD_FILE).read_text())
    del card["files"][OOD_FILE]
    (folder / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(ArtifactError, match="not listed"):
        read_ood(folder)


def test_unknown_task_and_bad_shapes_are_refused(folder):
    with pytest.raises(ConfigError, match="unknown tasks"):
        write_ood(folder, {"nope": _density()})
    with pytest.raises(ArtifactError, match="shapes disagree"):
        TaskDensity("branch", (0, 3), np.array([0]), np.zeros((1, 4)), np.eye(4), 1.0, 0.05, {})


def test_prefix_part_round_trips(folder):
    rng = np.random.default_rng(2)
    m = rng.normal(size=(6, 6))
    prefix = PrefixDensity(rng.normal(size=(2, 6)), m @ m.T, 7.5, 2.0, 40.0, 9.0)
    write_ood(folder, {"a": TaskDensity(**{**_density().__dict__, "prefix": prefix}), "b": _density(start=4)})
    read = read_ood(folder)
    assert read["b"].prefix is None
    got = read["a"].prefix
    np.testing.assert_array_equal(got.means, prefix.means)
    np.testing.assert_array_equal(got.precision, prefix.precision)
    assert (got.center, got.scale, got.embedding_center, got.embedding_scale) == (7.5, 2.0, 40.0, 9.0)


def test_format_1_files_still_read_as_embedding_only(folder):
    """A drifa-edge-ood/1 file (written before the prefix part) keeps working."""
    write_ood(folder, {"a": _density()})
    with np.load(folder / OOD_FILE, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["meta"]))
    assert meta["format"] == "drifa-edge-ood/2"
    meta["format"] = "drifa-edge-ood/1"
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(folder / OOD_FILE, **arrays)
    card = json.loads((folder / CARD_FILE).read_text())
    card["files"][OOD_FILE] = sha256_file(folder / OOD_FILE)
    (folder / CARD_FILE).write_text(json.dumps(card))
    assert read_ood(folder)["a"].prefix is None
    meta["format"] = "drifa-edge-ood/9"
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(folder / OOD_FILE, **arrays)
    card["files"][OOD_FILE] = sha256_file(folder / OOD_FILE)
    (folder / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(ArtifactError, match="ood/9.*re-run 'drifa-edge calibrate-ood'"):
        read_ood(folder)
