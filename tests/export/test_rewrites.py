"""Export rewrites (drifa_edge.export.rewrites): same function, fewer operations.

The function is checked against numpy (an independent computation), the structure by op
counts; parity of whole exported models against PyTorch is the conformance suite's job
(tests/runtimes/test_conformance.py runs the rewritten graphs)."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper  # noqa: E402

from drifa_edge.export.rewrites import apply_rewrites, sigmoid_after_extremum  # noqa: E402


def _graph() -> onnx.ModelProto:
    """x -> s1 = Sigmoid -> ReduceMax (moved); x -> s2 = Sigmoid -> ReduceMin and ReduceMax (moved,
    two reductions); x -> s3 = Sigmoid -> ReduceMax and ReduceMean (kept: the mean needs the map)."""
    nodes = [
        helper.make_node("Sigmoid", ["x"], ["s1"], name="sig1"),
        helper.make_node("ReduceMax", ["s1"], ["m1"], name="max1", axes=[2, 3], keepdims=0),
        helper.make_node("Neg", ["x"], ["nx"], name="neg"),
        helper.make_node("Sigmoid", ["nx"], ["s2"], name="sig2"),
        helper.make_node("ReduceMin", ["s2"], ["m2"], name="min2", axes=[2, 3], keepdims=1),
        helper.make_node("ReduceMax", ["s2"], ["m3"], name="max3", axes=[1], keepdims=0),
        helper.make_node("Sigmoid", ["x"], ["s3"], name="sig3"),
        helper.make_node("ReduceMax", ["s3"], ["m4"], name="max4", axes=[2, 3], keepdims=0),
        helper.make_node("ReduceMean", ["s3"], ["m5"], name="mean5", axes=[2, 3], keepdims=0),
        helper.make_node("Add", ["m1", "m4"], ["y"], name="add"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 4, 5, 6])
    outs = [
        helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", 4]),
        helper.make_tensor_value_info("m2", TensorProto.FLOAT, ["B", 4, 1, 1]),
        helper.make_tensor_value_info("m3", TensorProto.FLOAT, ["B", 5, 6]),
        helper.make_tensor_value_info("m5", TensorProto.FLOAT, ["B", 4]),
    ]
    return helper.make_model(
        helper.make_graph(nodes, "g", [x], outs), opset_imports=[helper.make_opsetid("", 17)]
    )


def _run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(["y", "m2", "m3", "m5"], {"x": x})


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z.astype(np.float64)))


def test_sigmoid_moves_after_max_and_min_only_when_every_consumer_is_one():
    model = _graph()
    assert sigmoid_after_extremum(model.graph) == 2  # sig1 and sig2; sig3 also feeds a mean
    onnx.checker.check_model(model, full_check=True)
    producers = {n.output[0]: n for n in model.graph.node}
    # the reductions now read the sigmoid's input, and a sigmoid follows each of them
    assert producers["m1/before_sigmoid"].input[0] == "x"
    assert producers["m1"].op_type == "Sigmoid"
    assert {producers[f"{m}/before_sigmoid"].input[0] for m in ("m2", "m3")} == {"nx"}
    assert producers["s3"].op_type == "Sigmoid"  # kept
    assert sum(n.op_type == "Sigmoid" for n in model.graph.node) == 4  # sig3 + one per moved reduction


def test_rewritten_graph_computes_the_same_function_as_numpy():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((3, 4, 5, 6)) * 4).astype(np.float32)
    before = _run(_graph(), x)
    model = _graph()
    report = apply_rewrites(model)
    assert report.to_dict() == {"sigmoid-after-extremum": 2}
    after = _run(model, x)
    s, sn = _sigmoid(x), _sigmoid(-x)
    want = [
        s.max(axis=(2, 3)) + s.max(axis=(2, 3)),
        sn.min(axis=(2, 3), keepdims=True),
        sn.max(axis=1),
        s.mean(axis=(2, 3)),
    ]
    for b, a, w in zip(before, after, want, strict=True):
        assert a.shape == w.shape
        np.testing.assert_allclose(a, w, rtol=0, atol=1e-6)  # float32 sigmoid vs float64 numpy
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-7)  # monotone sigmoid: max/min commute


def test_nothing_to_move_leaves_the_graph_as_it_was():
    model = _graph()
    sigmoid_after_extremum(model.graph)
    again = onnx.ModelProto()
    again.CopyFrom(model)
    assert sigmoid_after_extremum(again.graph) == 0
    assert again == model


def test_exported_suffix_has_no_sigmoid_left_before_a_max_pool(tiny_checkpoint, tmp_path):
    pytest.importorskip("torch")
    from drifa_edge.artifact.checkpoint import load_checkpoint
    from drifa_edge.export.onnx import ExportConfig, export_graph

    net, card = load_checkpoint(tiny_checkpoint)
    path = tmp_path / "suffix.onnx"
    export_graph(net, "suffix", path, ExportConfig(check=False, rewrites=False), card.to_json())
    plain = onnx.load(str(path))
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(plain)
    moved = apply_rewrites(rewritten).to_dict()["sigmoid-after-extremum"]

    def counts(model):
        producers = {n.output[0]: n for n in model.graph.node}
        feeding_max = [n for n in model.graph.node if n.op_type == "ReduceMax" and n.input[0] in producers
                       and producers[n.input[0]].op_type == "Sigmoid"]  # fmt: skip
        return len(feeding_max), sum(n.op_type == "Sigmoid" for n in model.graph.node)

    mfas = sum(1 for m in net.modules() if type(m).__name__ == "MFA")
    in_suffix = mfas - 2 * (1 + 2)  # the stem's and the first RRA block's MFAs are in the prefix
    # HIFA's a4 is only max-pooled: one per MFA moves; a2 and MLIFA's maps also feed other ops
    assert moved == in_suffix
    assert counts(rewritten)[0] == counts(plain)[0] - in_suffix
    assert counts(rewritten)[1] == counts(plain)[1]  # as many sigmoids, on (B, C) instead of maps
