"""Explicit Q/DQ for TensorRT, checked on the CPU with onnxruntime.

What a GPU would add is TensorRT's own INT8 kernels; what is checked here is the part
that decides accuracy and uncertainty: where the Q/DQ pairs go, their scales, that the
MC mask chain stays in float, and how far the quantized graph moves from FP32.
"""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from drifa_edge.errors import BadInputError, ConfigError  # noqa: E402
from drifa_edge.quantize import tensorrt_qdq as q  # noqa: E402

FEATS = ["feat_derm", "feat_xray"]
IMAGES = ["image_derm", "image_xray"]


def session(model, optimize: bool = True):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    if not optimize:  # no QLinearConv fusion: exactly DQ(Q(x)) in float
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


# ---------------------------------------------------------------- calibration batching


@pytest.mark.parametrize("total", [1, 7, 29, 30, 31, 59, 61, 90, 300])
@pytest.mark.parametrize("rows", [(1, 30, 60), (1, 30, 30), (8, 16, 24), (30, 30, 30)])
def test_batch_sizes_stay_within_the_profile(total, rows):
    sizes = q.batch_sizes(total, rows)
    lo, opt, hi = rows
    assert all(lo <= s <= hi for s in sizes)
    assert total <= sum(sizes) < total + lo  # padding only to reach the minimum
    assert all(s == opt for s in sizes[:-1])


def test_batch_sizes_exact_mode_is_one_shape():
    assert q.batch_sizes(70, (1, 30, 60), exact=True) == [30, 30, 30]
    assert q.batch_sizes(70, (1, 30, 60)) == [30, 40]  # the 10 left over join the last batch
    assert q.batch_sizes(70, (1, 30, 35)) == [30, 30, 10]


def test_calibration_batches_cover_the_subset_once_in_order():
    n = 50
    a = np.arange(n, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    b = -a
    batches = list(q.calibration_batches([a, b], (4, 8, 10), subset=23))
    rows = np.concatenate([x[:, 0] for x, _ in batches])
    chosen = q.evenly_spaced(n, 23)
    assert len(chosen) == 23 and chosen[0] == 0 and chosen[-1] == n - 1
    assert [len(x) for x, _ in batches] == q.batch_sizes(23, (4, 8, 10))
    np.testing.assert_array_equal(rows[:23], chosen)  # every chosen case once, in order
    assert set(rows[23:]) <= set(rows[:23])  # padding repeats rows already in the batch
    for x, y in batches:
        np.testing.assert_array_equal(x, -y)  # inputs stay aligned row by row


def test_calibration_batches_refuse_misaligned_or_empty_inputs():
    with pytest.raises(BadInputError, match="differ in length"):
        list(q.calibration_batches([np.zeros((3, 2)), np.zeros((4, 2))], (1, 2, 2)))
    with pytest.raises(BadInputError, match="at least one case"):
        list(q.calibration_batches([np.zeros((0, 2))], (1, 2, 2)))
    with pytest.raises(ConfigError, match="min <= opt <= max"):
        q.batch_sizes(10, (5, 2, 8))


def test_tile_cases_keeps_each_case_adjacent():
    f = np.arange(3, dtype=np.float32)[:, None]
    np.testing.assert_array_equal(q.tile_cases([f], 2)[0][:, 0], [0, 0, 1, 1, 2, 2])


# ---------------------------------------------------------------- scales, against numpy


def _fake_quant(x, scale, lo=-128, hi=127):
    return np.clip(np.rint(x / scale), lo, hi) * scale  # np.rint: round half to even, as ONNX


def _toy_model():
    """Conv (with bias) -> Relu -> Flatten, then a Gemm (transB=1) and a MatMul on the same tensor."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    w[2] *= 0.01  # one small channel: per-channel scales must keep it precise
    bias = rng.standard_normal(4).astype(np.float32)
    g = rng.standard_normal((3, 4 * 5 * 5)).astype(np.float32)
    m = rng.standard_normal((4 * 5 * 5, 2)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"]),
        helper.make_node("Gemm", ["f", "g"], ["y1"], transB=1),
        helper.make_node("MatMul", ["f", "m"], ["y2"]),
    ]
    graph = helper.make_graph(
        nodes,
        "toy",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2, 5, 5])],
        [
            helper.make_tensor_value_info("y1", TensorProto.FLOAT, ["n", 3]),
            helper.make_tensor_value_info("y2", TensorProto.FLOAT, ["n", 2]),
        ],
        [numpy_helper.from_array(a, k) for k, a in (("w", w), ("b", bias), ("g", g), ("m", m))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return model, w, bias, g, m


def _conv_same(x, w, b):
    pad = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    win = np.lib.stride_tricks.sliding_window_view(pad, (3, 3), axis=(2, 3))  # (n, c, 5, 5, 3, 3)
    return np.einsum("nchwij,kcij->nkhw", win, w) + b[None, :, None, None]


def _toy_quantized(tmp_path, x, method="max"):
    model, *rest = _toy_model()
    src, dst = tmp_path / "toy.onnx", tmp_path / "toy.qdq.onnx"
    onnx.save(model, str(src))
    feeds = [{"x": x[:2]}, {"x": x[2:]}]
    report = q.quantize_for_tensorrt(src, dst, feeds, q.QDQConfig(backend="drifa", method=method))
    return onnx.load(str(dst)), report, rest


def _weight_scales(qmodel):
    """{float weight name: (int8 weight, per-channel scale, axis)} from the Q/DQ graph."""
    inits = {t.name: numpy_helper.to_array(t) for t in qmodel.graph.initializer}
    out = {}
    for n in qmodel.graph.node:
        if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[1]].ndim == 1:
            axis = {a.name: a.i for a in n.attribute}.get("axis", 1)
            out[n.input[0]] = (inits[n.input[0]], inits[n.input[1]], axis)
    return out


def test_qdq_scales_are_symmetric_minmax_and_per_channel(tmp_path):
    """The writer's settings, checked against numpy: activation scale = max|x| / 127 over the
    calibration feeds, zero points 0, weight scales max|W| / 127 per output channel, and the
    graph's output equal to a numpy fake quantization with those scales."""
    x = np.random.default_rng(4).standard_normal((4, 2, 5, 5)).astype(np.float32) * 2
    qmodel, report, (w, bias, g, m) = _toy_quantized(tmp_path, x)
    onnx.checker.check_model(qmodel)
    assert q.check_qdq_placement(qmodel) == []
    assert report["backend"] == "drifa" and report["fully_quantized_nodes"] == 3
    assert report["shared_dq_inputs"] == 0
    f = np.maximum(_conv_same(x, w, bias), 0).reshape(4, -1)  # float calibration of f
    scales = {
        n.input[0]: float(
            numpy_helper.to_array(next(t for t in qmodel.graph.initializer if t.name == n.input[1]))
        )
        for n in qmodel.graph.node
        if n.op_type == "QuantizeLinear"
    }
    assert scales["x"] == pytest.approx(np.abs(x).max() / 127, rel=1e-5)
    assert scales["f"] == pytest.approx(np.abs(f).max() / 127, rel=1e-5)
    zero_points = [t for t in qmodel.graph.initializer if "zero_point" in t.name]
    assert zero_points and all(not numpy_helper.to_array(t).any() for t in zero_points)
    weights = {k.split("_")[0]: v for k, v in _weight_scales(qmodel).items()}
    for name, ref, axis in (("w", w, 0), ("g", g, 0), ("m", m, 1)):
        wq, scale, got_axis = weights[name]
        assert got_axis == axis and wq.dtype == np.int8
        red = tuple(d for d in range(ref.ndim) if d != axis)
        np.testing.assert_allclose(scale, np.abs(ref).max(axis=red) / 127, rtol=1e-5)

    def per_channel(weight, axis):
        red = tuple(d for d in range(weight.ndim) if d != axis)
        s = np.abs(weight).max(axis=red, keepdims=True) / 127
        return np.clip(np.rint(weight / s), -127, 127) * s

    y1, y2 = session(qmodel, optimize=False).run(None, {"x": x})
    xq = _fake_quant(x, scales["x"])
    fq = _fake_quant(np.maximum(_conv_same(xq, per_channel(w, 0), bias), 0).reshape(4, -1), scales["f"])
    np.testing.assert_allclose(y1, fq @ per_channel(g, 0).T, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(y2, fq @ per_channel(m, 1), rtol=1e-4, atol=1e-4)
    # the reference itself is not a float pass in disguise:
    assert np.abs(y1 - f @ g.T).max() > 1e-3


def test_inputs_only_float_bias_and_one_pair_per_tensor(tmp_path):
    x = np.random.default_rng(4).standard_normal((4, 2, 5, 5)).astype(np.float32)
    qmodel, _, _ = _toy_quantized(tmp_path, x)
    ops = [n.op_type for n in qmodel.graph.node]
    assert ops.count("QuantizeLinear") == 2  # x, and f shared by Gemm and MatMul; no output Q/DQ
    assert ops.count("DequantizeLinear") == 5  # 2 activations + 3 weights
    inits = {t.name: numpy_helper.to_array(t) for t in qmodel.graph.initializer}
    assert inits["b"].dtype == np.float32  # the bias stays float (TensorRT)
    assert {"w", "g", "m"}.isdisjoint(inits)  # float weights replaced by int8


def test_zero_activation_range_gets_a_usable_scale(tmp_path):
    x = np.zeros((4, 2, 5, 5), np.float32)
    qmodel, report, _ = _toy_quantized(tmp_path, x)
    assert min(q.activation_scales(qmodel).values()) >= q.MIN_ACTIVATION_SCALE


def _bad_graph(nodes, outputs, zero=0):
    graph = helper.make_graph(
        nodes,
        "bad",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2]) for n in outputs],
        [
            numpy_helper.from_array(np.array(0.1, np.float32), "s"),
            numpy_helper.from_array(np.array(zero, np.int8), "z"),
            numpy_helper.from_array(np.ones((2, 2), np.float32), "w"),
        ],
    )
    return " | ".join(q.check_qdq_placement(helper.make_model(graph)))


QDQ_X = [
    helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q"),
    helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"], name="dq"),
]


def test_placement_rule_allows_a_shared_dq_beside_elementwise_ops():
    """TensorRT propagates DQ through elementwise ops: DQ -> MatMul + Add + ReduceMean is fine."""
    nodes = QDQ_X + [
        helper.make_node("MatMul", ["xd", "w"], ["y"]),
        helper.make_node("Add", ["xd", "y"], ["a"]),
        helper.make_node("ReduceMean", ["xd"], ["r"], keepdims=1),
    ]
    assert _bad_graph(nodes, ["a", "r"]) == ""


def test_placement_rule_catches_what_breaks_mc_dropout_or_a_gate():
    mask_chain = [
        helper.make_node("RandomUniformLike", ["x"], ["u"], name="rand"),
        helper.make_node("GreaterOrEqual", ["u", "xd"], ["keep"], name="ge"),
        helper.make_node("Cast", ["keep"], ["mask"], to=TensorProto.FLOAT, name="cast"),
        helper.make_node("Mul", ["x", "mask"], ["out"], name="maskmul"),
    ]
    assert "MC mask node GreaterOrEqual 'ge' reads a dequantized tensor" in _bad_graph(
        QDQ_X + mask_chain, ["out"]
    )
    quantized_mask = [
        helper.make_node("RandomUniformLike", ["x"], ["u"], name="rand"),
        helper.make_node("GreaterOrEqual", ["u", "x"], ["keep"], name="ge"),
        helper.make_node("Cast", ["keep"], ["mask"], to=TensorProto.FLOAT, name="cast"),
        helper.make_node("QuantizeLinear", ["mask", "s", "z"], ["mq"], name="qm"),
        helper.make_node("DequantizeLinear", ["mq", "s", "z"], ["md"], name="dqm"),
        helper.make_node("Mul", ["x", "md"], ["out"], name="maskmul"),
    ]
    problems = _bad_graph(quantized_mask, ["out"])
    assert "QuantizeLinear 'qm' quantizes an MC mask" in problems
    gate_input_quantized = QDQ_X + [
        helper.make_node("Sigmoid", ["xd"], ["g"], name="gate"),
        helper.make_node("Mul", ["x", "g"], ["out"], name="gatemul"),
    ]
    assert "sigmoid gate 'gate' reads a dequantized tensor" in _bad_graph(gate_input_quantized, ["out"])
    gate_output_quantized = [
        helper.make_node("Sigmoid", ["x"], ["g"], name="gate"),
        helper.make_node("QuantizeLinear", ["g", "s", "z"], ["gq"], name="qg"),
        helper.make_node("DequantizeLinear", ["gq", "s", "z"], ["gd"], name="dqg"),
        helper.make_node("MatMul", ["gd", "w"], ["y"]),
        helper.make_node("Identity", ["gd"], ["gu"]),  # seen through reshapes
        helper.make_node("Mul", ["x", "gu"], ["out"], name="gatemul"),
    ]
    assert "Mul 'gatemul' reads the sigmoid gate" in _bad_graph(gate_output_quantized, ["out", "y"])
    assert "zero point is not 0" in _bad_graph(
        QDQ_X + [helper.make_node("MatMul", ["xd", "w"], ["y"])], ["y"], 3
    )


def test_config_validation():
    with pytest.raises(ConfigError, match="backend"):
        q.QDQConfig(backend="tensorrt")
    with pytest.raises(ConfigError, match="op_types"):
        q.QDQConfig(op_types=("Conv", "Add"))
    with pytest.raises(ConfigError, match="method"):
        q.QDQConfig(method="entropy")


# ---------------------------------------------------------------- the exported DRIFA-Net graphs
# Marked slow: onnxruntime's quantize_static spends ~20-50 s here (this shared 2-core machine)
# editing the 2,000-node suffix graph in Python (replace_input_of_all_nodes, augment_graph;
# profiled), against ~3 s for the hand-written writer it replaced. The toy-graph tests above
# exercise the same settings in the default run.


@pytest.fixture(scope="module")
def quantized(tiny_export, tmp_path_factory):
    """Q/DQ prefix and suffix of the tiny export, calibrated on 16 cases x 4 masks."""
    rng = np.random.default_rng(1)
    images = [
        rng.standard_normal((24, 3, 32, 32), np.float32),
        rng.standard_normal((24, 1, 32, 32), np.float32),
    ]
    calib, held_out = [x[:16] for x in images], [x[16:] for x in images]
    onnx_dir = tiny_export / "onnx"
    feats = q.prefix_features(onnx_dir / "prefix.onnx", calib, (1, 4, 8), IMAGES, FEATS)
    feeds = [
        dict(zip(FEATS, b, strict=True)) for b in q.calibration_batches(q.tile_cases(feats, 4), (1, 30, 60))
    ]
    prefix_feeds = [dict(zip(IMAGES, b, strict=True)) for b in q.calibration_batches(calib, (1, 4, 8))]
    out = tmp_path_factory.mktemp("qdq")
    config = q.QDQConfig(backend="drifa")
    reports = {
        "suffix": q.quantize_for_tensorrt(onnx_dir / "suffix.onnx", out / "suffix.qdq.onnx", feeds, config),
        "prefix": q.quantize_for_tensorrt(
            onnx_dir / "prefix.onnx", out / "prefix.qdq.onnx", prefix_feeds, config
        ),
    }
    return {"dir": out, "reports": reports, "held_out": held_out, "feeds": feeds}


@pytest.mark.slow
def test_qdq_graphs_are_valid_and_fully_placed(quantized):
    for graph in ("prefix", "suffix"):
        model = onnx.load(str(quantized["dir"] / f"{graph}.qdq.onnx"))
        onnx.checker.check_model(model, full_check=True)
        assert q.check_qdq_placement(model) == []
        report = quantized["reports"][graph]
        assert report["backend"] == "drifa"
        assert report["fully_quantized_nodes"] == report["quantizable_nodes"] > 0
        assert report["shared_dq_inputs"] == 0  # only Conv/Gemm/MatMul read Q/DQ


@pytest.mark.slow
def test_the_mc_mask_chain_stays_float(tiny_export, quantized):
    fp32 = onnx.load(str(tiny_export / "onnx" / "suffix.onnx"))
    qdq = onnx.load(str(quantized["dir"] / "suffix.qdq.onnx"))

    def count(model, op):
        return sum(n.op_type == op for n in model.graph.node)

    for op in ("RandomUniformLike", "GreaterOrEqual", "Cast", "Sigmoid", "Mul", "Add"):
        assert count(qdq, op) == count(fp32, op) > 0
    assert q.check_qdq_placement(qdq) == []
    from drifa_edge.quantize.scopes import onnx_mask_nodes

    mask = set(onnx_mask_nodes(qdq.graph))
    gates = set(q.sigmoid_gates(qdq.graph))
    assert len(mask) == len(onnx_mask_nodes(fp32.graph)) > 0 and len(gates) > 0
    producers = {o: n.op_type for n in qdq.graph.node for o in n.output}
    for node in qdq.graph.node:
        if node.name in mask | gates:
            assert not any(producers.get(i) == "DequantizeLinear" for i in node.input), node.name
    # the written graph is not seeded: MC masks still differ between calls
    assert all(
        "seed" not in {a.name for a in n.attribute}
        for n in qdq.graph.node
        if n.op_type == "RandomUniformLike"
    )


def _logits(model, feeds):
    return session(model).run(None, feeds)


@pytest.mark.slow
def test_qdq_suffix_stays_close_to_fp32_under_the_same_masks(tiny_export, quantized):
    """Same seeded masks in both graphs; held-out cases, 4 masks each.

    Limit: max |logit difference| <= 0.1 x the FP32 logits' standard deviation. Measured
    ~0.02-0.04 here: 8-bit steps of amax/127 (<0.8 % of a tensor's range) through ~20
    quantized layers in series. A scale 4x too small (clipping) or 30x too large
    (resolution lost) gives 0.5-0.9 and fails the same limit (negative control below).
    """
    fp32 = onnx.load(str(tiny_export / "onnx" / "suffix.onnx"))
    qdq = onnx.load(str(quantized["dir"] / "suffix.qdq.onnx"))
    q.seed_random_nodes(fp32)
    q.seed_random_nodes(qdq)
    prefix = session(onnx.load(str(tiny_export / "onnx" / "prefix.onnx")))
    feats = prefix.run(FEATS, dict(zip(IMAGES, quantized["held_out"], strict=True)))
    feeds = dict(zip(FEATS, q.tile_cases(feats, 4), strict=True))
    ref, got = _logits(fp32, feeds), _logits(qdq, feeds)
    for r, g in zip(ref, got, strict=True):
        assert np.abs(r - g).max() <= 0.1 * r.std()
        assert (r.argmax(1) == g.argmax(1)).mean() >= 0.75
    # the masks really are shared, so the comparison isolates quantization:
    other = onnx.load(str(tiny_export / "onnx" / "suffix.onnx"))
    q.seed_random_nodes(other, base=100)
    assert np.abs(_logits(other, feeds)[0] - ref[0]).max() > 10 * np.abs(ref[0] - got[0]).max()


@pytest.mark.slow
@pytest.mark.parametrize("factor", [0.25, 30.0])
def test_wrong_scales_fail_the_same_limit(tiny_export, quantized, factor):
    fp32 = onnx.load(str(tiny_export / "onnx" / "suffix.onnx"))
    wrong = onnx.load(str(quantized["dir"] / "suffix.qdq.onnx"))
    inits = {t.name: t for t in wrong.graph.initializer}
    for name, value in q.activation_scales(wrong).items():
        inits[name].CopyFrom(numpy_helper.from_array(np.array(value * factor, np.float32), name))
    q.seed_random_nodes(fp32)
    q.seed_random_nodes(wrong)
    prefix = session(onnx.load(str(tiny_export / "onnx" / "prefix.onnx")))
    feats = prefix.run(FEATS, dict(zip(IMAGES, quantized["held_out"], strict=True)))
    feeds = dict(zip(FEATS, q.tile_cases(feats, 4), strict=True))
    ref, got = _logits(fp32, feeds), _logits(wrong, feeds)
    assert max(np.abs(r - g).max() / r.std() for r, g in zip(ref, got, strict=True)) > 0.1


@pytest.mark.slow
def test_qdq_prefix_stays_close_to_fp32(tiny_export, quantized):
    """Deterministic graph: max |feature difference| <= 5 % of max |feature| (measured ~1 %)."""
    feeds = dict(zip(IMAGES, quantized["held_out"], strict=True))
    ref = session(onnx.load(str(tiny_export / "onnx" / "prefix.onnx"))).run(None, feeds)
    got = session(onnx.load(str(quantized["dir"] / "prefix.qdq.onnx"))).run(None, feeds)
    for r, g in zip(ref, got, strict=True):
        assert np.abs(r - g).max() <= 0.05 * np.abs(r).max()


@pytest.mark.slow
def test_calibration_is_reproducible_and_percentile_clips(tiny_export, quantized, tmp_path):
    """Seeded masks during calibration: the same feeds give the same scales; the
    99th percentile of |x| gives scales no larger than the maximum."""
    src = tiny_export / "onnx" / "prefix.onnx"
    feeds = [dict(zip(IMAGES, quantized["held_out"], strict=True))]
    runs = []
    for name, method in (("a", "max"), ("b", "max"), ("p", "percentile")):
        config = q.QDQConfig(backend="drifa", method=method, percentile=99.0)
        q.quantize_for_tensorrt(src, tmp_path / f"{name}.onnx", feeds, config)
        runs.append(q.activation_scales(onnx.load(str(tmp_path / f"{name}.onnx"))))
    assert runs[0] == runs[1]
    assert runs[2].keys() == runs[0].keys()
    assert all(runs[2][k] <= runs[0][k] * (1 + 1e-6) for k in runs[0])
    assert any(runs[2][k] < runs[0][k] * 0.99 for k in runs[0])


def test_modelopt_backend_requires_modelopt(tmp_path):
    if q.modelopt_available():
        pytest.skip("ModelOpt is installed here")
    from drifa_edge.errors import MissingDependencyError

    model, *_ = _toy_model()
    onnx.save(model, str(tmp_path / "toy.onnx"))
    feeds = [{"x": np.ones((2, 2, 5, 5), np.float32)}]
    with pytest.raises(MissingDependencyError, match=r"drifa-edge\[modelopt\]"):
        q.quantize_for_tensorrt(
            tmp_path / "toy.onnx", tmp_path / "s.onnx", feeds, q.QDQConfig(backend="modelopt")
        )
    assert not (tmp_path / "s.onnx").exists()


# ---------------------------------------------------------------- the export step that writes them


@pytest.mark.slow
@pytest.mark.parametrize("masks", ["graph", "host"])
def test_prepare_int8_onnx_from_an_export_folder(tiny_export, images, tmp_path, masks):
    from drifa_edge.export.tensorrt import load_profile
    from drifa_edge.export.tensorrt_prepare import prepare_int8_onnx

    result = prepare_int8_onnx(
        tiny_export,
        load_profile("jetson-orin"),
        {"derm": images(12)[0], "xray": images(12)[1]},
        subset=10,
        masks=masks,
        qdq=q.QDQConfig(backend="drifa", masks_per_case=3),
        out_dir=tmp_path,
    )
    assert set(result["files"]) == {"prefix", "suffix"}
    for path in result["files"].values():
        assert q.check_qdq_placement(onnx.load(str(path))) == []
    suffix = result["reports"]["suffix"]
    assert suffix["rows"] == 30  # 10 cases x 3 masks
    assert suffix["random_nodes"] == (13 if masks == "graph" else 0)
    assert result["reports"]["prefix"]["rows"] == 10


def test_prepare_int8_onnx_checks_the_calibration_images(tiny_export, images, tmp_path):
    from drifa_edge.export.tensorrt import load_profile
    from drifa_edge.export.tensorrt_prepare import prepare_int8_onnx

    wrong = [images(4)[0], images(4)[0]]  # 3 channels where the x-ray task has 1
    with pytest.raises(BadInputError, match="xray.*expected \\(N, 1, 32, 32\\)"):
        prepare_int8_onnx(tiny_export, load_profile("desktop-cuda"), wrong, out_dir=tmp_path)
