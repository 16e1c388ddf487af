"""Ignored-scope policies read the graph's structure: the MC-mask chain of every dropout
is found in OpenVINO and ONNX graphs, and each policy picks the ops it says it does."""

from __future__ import annotations

import collections

import pytest

from drifa_edge.errors import ConfigError
from drifa_edge.quantize import scopes

ov = pytest.importorskip("openvino")
onnx = pytest.importorskip("onnx")


def _n_dropouts(path) -> int:
    from drifa_edge.artifact.card import read_card
    from drifa_edge.model.config import dropout_shapes

    return len(dropout_shapes(read_card(path).model))


def _ir(path, graph):
    return ov.Core().read_model(str(path / "openvino" / f"{graph}.xml"))


def test_openvino_mask_chain_per_dropout(tiny_export):
    n = _n_dropouts(tiny_export)
    suffix = _ir(tiny_export, "suffix")
    kinds = collections.Counter()
    by_name = {op.get_friendly_name(): op.get_type_name() for op in suffix.get_ordered_ops()}
    for name in scopes.ov_mask_nodes(suffix):
        kinds[by_name[name]] += 1
    # ShapeOf -> RandomUniform -> GreaterEqual -> Convert -> Multiply(x, mask) -> Multiply(., 1/(1-p))
    assert kinds == {"ShapeOf": n, "RandomUniform": n, "GreaterEqual": n, "Convert": n, "Multiply": 2 * n}
    masks = _ir(tiny_export, "suffix_masks")
    assert len(scopes.ov_mask_nodes(masks)) == 5 * n  # a uniform_<i> input instead of ShapeOf + RandomUniform
    assert scopes.ov_mask_nodes(_ir(tiny_export, "suffix_det")) == []
    assert scopes.ov_mask_nodes(_ir(tiny_export, "prefix")) == []


def test_onnx_mask_chain_per_dropout(tiny_export):
    n = _n_dropouts(tiny_export)
    model = onnx.load(str(tiny_export / "onnx" / "suffix.onnx"))
    types = {node.name: node.op_type for node in model.graph.node}
    kinds = collections.Counter(types[name] for name in scopes.onnx_mask_nodes(model.graph))
    assert kinds == {"RandomUniformLike": n, "GreaterOrEqual": n, "Cast": n, "Mul": 2 * n}
    det = onnx.load(str(tiny_export / "onnx" / "suffix_det.onnx"))
    assert scopes.onnx_mask_nodes(det.graph) == []


def test_policies_pick_the_ops_they_name(tiny_export):
    suffix = _ir(tiny_export, "suffix")
    types = {op.get_friendly_name(): op for op in suffix.get_ordered_ops()}
    assert scopes.ov_policy_quantized_ops(suffix, "all") is None
    conv_matmul = scopes.ov_policy_quantized_ops(suffix, "conv-matmul")
    assert {types[n].get_type_name() for n in conv_matmul} == {"Convolution", "MatMul"}
    attention = scopes.ov_policy_quantized_ops(suffix, "attention-fp32")
    assert {types[n].get_type_name() for n in attention} == {"Convolution"}
    assert set(attention) < set(conv_matmul)
    for name in attention:  # feature maps only, never the 1x1 convs on pooled (B, C, 1, 1) vectors
        shape = types[name].input(0).get_partial_shape()
        assert shape[2].get_length() * shape[3].get_length() > 1
    pooled = [
        op
        for op in suffix.get_ordered_ops()
        if op.get_type_name() == "Convolution" and op.input(0).get_partial_shape()[2].get_length() == 1
    ]
    assert pooled, "the CLIA 1x1 conv on a pooled vector should exist in DRIFA-Net"
    ignored = set(scopes.ov_ignored_names(suffix, "attention-fp32"))
    assert not ignored & set(attention)
    assert set(scopes.ov_mask_nodes(suffix)) <= ignored
    keep = attention[:2]
    assert set(keep) <= set(scopes.ov_ignored_names(suffix, "sensitivity", keep))


def test_onnx_policy_matches_openvino_policy(tiny_export):
    model = onnx.load(str(tiny_export / "onnx" / "suffix.onnx"))
    ignored = set(scopes.onnx_ignored_names(model, "attention-fp32"))
    chosen = [n for n in model.graph.node if n.name not in ignored]
    assert {n.op_type for n in chosen} == {"Conv"}
    n_ov = len(scopes.ov_policy_quantized_ops(_ir(tiny_export, "suffix"), "attention-fp32"))
    assert len(chosen) == n_ov


def test_unknown_policy_is_refused(tiny_export):
    with pytest.raises(ConfigError):
        scopes.ov_policy_quantized_ops(_ir(tiny_export, "suffix"), "everything")
