"""Export folder layout, ensembles, and the integrity checks runtimes rely on (no torch)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from drifa_edge.artifact import layout
from drifa_edge.artifact.card import default_card, write_card
from drifa_edge.errors import ArtifactError, BadInputError, UnsupportedBackendError
from drifa_edge.model.config import ModelConfig, TaskSpec, dropout_shapes


@pytest.fixture
def card():
    cfg = ModelConfig(tasks=(TaskSpec("a", ("x", "y")), TaskSpec("b", ("p", "q", "r"), 1)), image_size=32)
    return default_card(cfg)


def test_paths_per_graph_and_precision():
    assert layout.onnx_file("prefix") == "onnx/prefix.onnx"
    assert layout.onnx_file("suffix_masks", "int8") == "onnx-int8/suffix_masks.onnx"
    assert layout.openvino_files("suffix") == ("openvino/suffix.xml", "openvino/suffix.bin")
    # bf16 is a compile hint on the FP32 IR, int8 its own folder
    assert layout.openvino_files("suffix", "bf16")[0] == "openvino/suffix.xml"
    assert layout.openvino_files("suffix", "int8")[0] == "openvino-int8/suffix.xml"
    assert layout.tensorrt_folder("jetson-orin", "fp16") == "tensorrt-jetson-orin-fp16"
    with pytest.raises(UnsupportedBackendError, match="openvino for bf16"):
        layout.onnx_file("prefix", "bf16")
    with pytest.raises(ValueError, match="unknown graph"):
        layout.onnx_file("head")


def test_io_names_and_dropout_modes():
    assert (layout.image_name("a"), layout.feature_name("a"), layout.logits_name("a")) == (
        "image_a",
        "feat_a",
        "logits_a",
    )
    assert layout.uniform_name(3) == "uniform_3"
    assert layout.suffix_graph("mc") == "suffix" and layout.suffix_graph("off") == "suffix_det"
    with pytest.raises(UnsupportedBackendError, match="dropout mode"):
        layout.suffix_graph("external")


def test_verified_card_refuses_modified_unlisted_and_missing_files(tmp_path, card):
    (tmp_path / "onnx").mkdir()
    (tmp_path / "onnx/prefix.onnx").write_bytes(b"graph bytes")
    write_card(card, tmp_path, hash_files=["onnx/prefix.onnx"])
    assert layout.verified_card(tmp_path, ["onnx/prefix.onnx"]).task_names == ("a", "b")
    (tmp_path / "onnx/suffix.onnx").write_bytes(b"added by hand")
    with pytest.raises(ArtifactError, match="not listed"):
        layout.verified_card(tmp_path, ["onnx/suffix.onnx"])
    with pytest.raises(ArtifactError, match="not found"):
        layout.verified_card(tmp_path, ["onnx/suffix_det.onnx"])
    (tmp_path / "onnx/prefix.onnx").write_bytes(b"graph bytez")
    with pytest.raises(ArtifactError, match="sha256"):
        layout.verified_card(tmp_path, ["onnx/prefix.onnx"])


def test_embedded_card_must_match_model_and_preprocessing(card):
    embedded = card.to_json()
    layout.check_embedded_card(card, embedded, "x.onnx")  # identical: fine
    layout.check_embedded_card(card.replace(temperature={"a": 2.0}), embedded, "x.onnx")  # refit: fine
    edited = json.loads(embedded)
    edited["preprocess"]["a"]["mean"] = [0.1, 0.1, 0.1]
    with pytest.raises(ArtifactError, match="'preprocess' section"):
        layout.check_embedded_card(card, json.dumps(edited), "x.onnx")
    with pytest.raises(ArtifactError, match="no embedded model card"):
        layout.check_embedded_card(card, None, "x.onnx")


def test_uniforms_are_validated(card):
    shapes = dropout_shapes(card.model)
    good = [np.zeros((4, *s)) for s in shapes]
    checked = layout.check_uniforms(card, good, 4)
    assert all(u.dtype == np.float32 and u.flags.c_contiguous for u in checked)
    with pytest.raises(BadInputError, match=f"need {len(shapes)} uniform arrays"):
        layout.check_uniforms(card, good[:-1], 4)
    with pytest.raises(BadInputError, match="uniform 0: expected shape"):
        layout.check_uniforms(card, good, 3)


def test_update_card_merges_the_export_section_and_hashes(tmp_path, card):
    write_card(card.replace(export={"format": "onnx"}), tmp_path)
    (tmp_path / "checks.json").write_text("{}")
    updated = layout.update_card(tmp_path, {"checks": {"onnxruntime": {"x": True}}}, ["checks.json"])
    assert updated.export == {"format": "onnx", "checks": {"onnxruntime": {"x": True}}}
    assert "checks.json" in updated.files
