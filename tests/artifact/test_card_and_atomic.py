"""Model-card schema versions, atomic writes, and the old import paths (warning shims)."""

from __future__ import annotations

import importlib
import json
import warnings

import pytest

from drifa_edge.artifact.atomic import atomic_write
from drifa_edge.artifact.card import CARD_FILE, ModelCard, default_card, read_card, write_card
from drifa_edge.errors import ArtifactError, ConfigError
from drifa_edge.model.config import ModelConfig, TaskSpec


@pytest.fixture
def card() -> ModelCard:
    tasks = (TaskSpec("a", ("x", "y")), TaskSpec("b", ("p", "q"), 1))
    return default_card(ModelConfig(tasks=tasks, image_size=32))


def test_a_card_written_before_the_move_still_loads(card, tmp_path):
    # the on-disk form of a card from before the re-layering: same schema, "drifa-edge-card/1"
    doc = json.loads(card.to_json())
    assert doc["format"] == "drifa-edge-card/1"
    (tmp_path / CARD_FILE).write_text(json.dumps(doc))
    assert read_card(tmp_path).to_dict() == card.to_dict()


@pytest.mark.parametrize(
    ("found", "message"),
    [("drifa-edge-card/2", "newer drifa-edge: upgrade"), ("something-else", "not a drifa-edge model card")],
)
def test_an_unknown_card_schema_is_refused(card, tmp_path, found, message):
    doc = {**json.loads(card.to_json()), "format": found}
    with pytest.raises(ConfigError, match=message):
        ModelCard.from_dict(doc)


def test_atomic_write_replaces_whole_files_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "f.json"
    atomic_write(path, "first\n")
    atomic_write(path, b"second")
    assert path.read_bytes() == b"second"
    assert sorted(p.name for p in path.parent.iterdir()) == ["f.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "f.txt"
    atomic_write(path, "old")
    with pytest.raises(TypeError):
        atomic_write(path, 42)  # not text or bytes: fails before the rename
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


def test_write_card_is_atomic_and_read_card_checks_hashes(card, tmp_path):
    (tmp_path / "w.bin").write_bytes(b"weights")
    write_card(card, tmp_path, hash_files=["w.bin"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [CARD_FILE, "w.bin"]
    (tmp_path / "w.bin").write_bytes(b"tampered")
    with pytest.raises(ArtifactError, match="does not match"):
        read_card(tmp_path)


OLD_PATHS = [
    ("drifa_edge.card", "read_card", "drifa_edge.artifact.card"),
    ("drifa_edge.export.layout", "onnx_file", "drifa_edge.artifact.layout"),
    ("drifa_edge.export.layout", "ENSEMBLE_FILE", "drifa_edge.artifact.ensemble"),
    ("drifa_edge.training.checkpoint", "WEIGHTS_FILE", "drifa_edge.artifact.checkpoint"),
    ("drifa_edge.training.ensemble", "resolve_members", "drifa_edge.artifact.ensemble"),
    ("drifa_edge.inference.uncertainty", "summarize", "drifa_edge.metrics.uncertainty"),
    ("drifa_edge.drift.metrics", "ece", "drifa_edge.metrics"),
    ("drifa_edge.drift.temperature", "fit_temperature", "drifa_edge.metrics.temperature"),
    ("drifa_edge.drift.temperature", "apply_calibration", "drifa_edge.artifact.card"),
    ("drifa_edge.inference.predict", "referral_rules", "drifa_edge.inference.predictor"),
]


@pytest.mark.parametrize(("old", "name", "new"), OLD_PATHS, ids=lambda x: str(x))
def test_old_import_paths_warn_and_forward(old, name, new):
    module = importlib.import_module(old)
    with pytest.warns(DeprecationWarning, match=f"{old}.{name} moved to {new}.{name}"):
        value = getattr(module, name)
    assert value is getattr(importlib.import_module(new), name)


def test_an_unknown_name_on_an_old_path_is_an_attribute_error():
    module = importlib.import_module("drifa_edge.card")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(AttributeError, match="no attribute 'nope'"):
            module.nope  # noqa: B018
