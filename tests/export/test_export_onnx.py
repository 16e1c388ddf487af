"""The ONNX export: graphs, random ops, dynamic batch, metadata, card, checks, ensembles."""

from __future__ import annotations

import collections
import json

import pytest

from drifa_edge.artifact import layout
from drifa_edge.artifact.card import read_card, sha256_file
from drifa_edge.errors import ExportError
from drifa_edge.model.config import dropout_shapes

onnx = pytest.importorskip("onnx")
pytest.importorskip("torch")

RANDOM = "RandomUniformLike"


def op_counts(path) -> collections.Counter:
    return collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def test_every_check_ran_and_passed(checked_export):
    _, out, result = checked_export
    assert result.passed
    recorded = json.loads((out / "checks.json").read_text())
    assert recorded["onnx"]["onnx_checker"]["passed"]
    for runtime in ("onnxruntime", "openvino"):
        names = set(recorded[runtime])
        assert names == {"deterministic_parity", "fixed_mask_parity", "mc_stochastic", "mc_consistency"}
        parity = recorded[runtime]["deterministic_parity"]
        assert parity["passed"] and parity["value"] <= 1e-4 and parity["limit"] == 1e-4
        assert recorded[runtime]["mc_stochastic"]["details"]["min_task_predictive_variance"] > 0


def test_card_vouches_for_every_file(checked_export):
    checkpoint, out, result = checked_export
    card = read_card(out)  # verifies every hash
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - {"model_card.json"}
    assert set(card.files) == on_disk == set(result.files)
    assert all(card.files[rel] == sha256_file(out / rel) for rel in on_disk)
    export = card.export
    assert export["settings"] == {
        "opset": 17,
        "exporter": "torchscript",
        "check": True,
        "rewrites": ["sigmoid-after-extremum"],
    }
    assert export["versions"]["drifa-edge"] and export["versions"]["onnx"]
    assert export["source"]["files"]["model.safetensors"] == read_card(checkpoint).files["model.safetensors"]
    assert export["checks"]["onnxruntime"]["mc_consistency"] is True
    assert export["openvino"]["compress_to_fp16"] is False


def test_random_ops_live_only_in_the_mc_suffix(checked_export):
    _, out, _ = checked_export
    n_dropouts = len(dropout_shapes(read_card(out).model))
    assert op_counts(out / "onnx/suffix.onnx")[RANDOM] == n_dropouts == 13
    for graph in ("prefix", "suffix_det", "suffix_masks"):
        assert op_counts(out / layout.onnx_file(graph))[RANDOM] == 0


def test_inputs_outputs_are_named_by_task_with_a_dynamic_batch(checked_export):
    _, out, _ = checked_export
    card = read_card(out)
    shapes = dropout_shapes(card.model)
    expected_inputs = {
        "prefix": ["image_derm", "image_xray"],
        "suffix": ["feat_derm", "feat_xray"],
        "suffix_det": ["feat_derm", "feat_xray"],
        "suffix_masks": ["feat_derm", "feat_xray"] + [f"uniform_{i}" for i in range(len(shapes))],
    }
    for graph, names in expected_inputs.items():
        model = onnx.load(str(out / layout.onnx_file(graph)))
        assert [i.name for i in model.graph.input] == names
        outputs = (
            ["feat_derm", "feat_xray"] if graph == "prefix" else ["logits_derm", "logits_xray", "embedding"]
        )
        assert [o.name for o in model.graph.output] == outputs
        for value in [*model.graph.input, *model.graph.output]:
            assert isinstance(dims(value)[0], str), f"{graph}:{value.name} batch axis is not dynamic"
    masks = onnx.load(str(out / layout.onnx_file("suffix_masks")))
    assert [dims(i)[1:] for i in masks.graph.input[2:]] == [list(s) for s in shapes]
    prefix = onnx.load(str(out / layout.onnx_file("prefix")))
    assert dims(prefix.graph.input[1])[1:] == [1, 32, 32]  # the gray modality keeps one channel


def test_card_is_embedded_in_metadata_props(checked_export):
    _, out, _ = checked_export
    card = read_card(out)
    for graph in layout.GRAPHS:
        props = {p.key: p.value for p in onnx.load(str(out / layout.onnx_file(graph))).metadata_props}
        assert props["drifa_edge.graph"] == graph
        embedded = json.loads(props["drifa_edge.model_card"])
        assert embedded["model"] == json.loads(card.to_json())["model"]
        assert embedded["preprocess"]["derm"]["mean"] == [0.5, 0.5, 0.5]
        assert embedded["temperature"] == {"derm": 1.5}
        assert embedded["export"]["settings"]["opset"] == 17


def test_zero_dropout_is_refused(checkpoint_builder, tmp_path):
    from drifa_edge.export.onnx import export_onnx

    checkpoint = checkpoint_builder(tmp_path / "p0", dropout=0.0)
    with pytest.raises(ExportError, match="p=0"):
        export_onnx(checkpoint, tmp_path / "out", check=False)


def test_an_ensemble_exports_every_member(checkpoint_builder, tmp_path):
    from drifa_edge.export.onnx import export_onnx
    from drifa_edge.runtimes.base import RuntimeOptions, open_runtime

    ens = tmp_path / "ens"
    for k in range(2):
        checkpoint_builder(ens / f"member-{k}", seed=k)
    manifest = {"format": "drifa-edge-ensemble/1", "members": ["member-0", "member-1"], "metrics": {}}
    (ens / "ensemble.json").write_text(json.dumps(manifest))
    result = export_onnx(ens, tmp_path / "out", check=False)
    out = tmp_path / "out"
    assert json.loads((out / "ensemble.json").read_text()) == manifest
    assert result.members == (out / "member-0", out / "member-1")
    assert "member-1/onnx/suffix.onnx" in result.files
    assert read_card(out / "member-1").export["source"]["checkpoint"] == str((ens / "member-1").resolve())
    pytest.importorskip("onnxruntime")
    assert open_runtime("onnxruntime", out / "member-0", RuntimeOptions(threads=1)).card.task_names


def test_full_graph_export_keeps_the_masks(tiny_checkpoint, tmp_path):
    """The plain single-graph export the benchmark compares against."""
    from drifa_edge.export.onnx import export_full_graph

    path = tmp_path / "full.onnx"
    export_full_graph(tiny_checkpoint, path)
    assert op_counts(path)[RANDOM] == 13


@pytest.mark.slow
def test_dynamo_exporter_gives_the_same_graphs(tiny_checkpoint, tmp_path):
    from drifa_edge.export.checks import CheckConfig
    from drifa_edge.export.onnx import export_onnx

    result = export_onnx(
        tiny_checkpoint, tmp_path / "out", exporter="dynamo", check_config=CheckConfig(cases=4, samples=200)
    )
    assert result.passed
    assert op_counts(tmp_path / "out/onnx/suffix.onnx")[RANDOM] == 13
    assert read_card(tmp_path / "out").export["settings"]["opset"] == 18
