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

from drifa_edge.errors import BadInputError, ConfigError, ExportError  # noqa: E402
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


def test_qdq_scales_match_a_numpy_fake_quantization():
    model, w, bias, g, m = _toy_model()
    x = np.random.default_rng(4).standard_normal((3, 2, 5, 5)).astype(np.float32) * 2
    amax = {"x": 2.5, "f": 4.0}  # x exceeds 2.5 in places: saturation is part of the check
    qmodel = q.insert_qdq(model, amax)
    onnx.checker.check_model(qmodel)
    y1, y2 = session(qmodel, optimize=False).run(None, {"x": x})

    def per_channel(weight, axis):
        red = tuple(d for d in range(weight.ndim) if d != axis)
        s = np.abs(weight).max(axis=red, keepdims=True) / 127
        return np.clip(np.rint(weight / s), -127, 127) * s

    xq = _fake_quant(x, 2.5 / 127)
    f = np.maximum(_conv_same(xq, per_channel(w, 0), bias), 0).reshape(3, -1)
    fq = _fake_quant(f, 4.0 / 127)
    np.testing.assert_allclose(y1, fq @ per_channel(g, 0).T, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(y2, fq @ per_channel(m, 1), rtol=1e-4, atol=1e-4)
    # the reference itself is not a float pass in disguise:
    assert np.abs(y1 - np.maximum(_conv_same(x, w, bias), 0).reshape(3, -1) @ g.T).max() > 1e-3


def test_placement_shares_one_activation_pair_and_keeps_weights_int8():
    model, *_ = _toy_model()
    qmodel = q.insert_qdq(model, {"x": 1.0, "f": 1.0})
    ops = [n.op_type for n in qmodel.graph.node]
    assert ops.count("QuantizeLinear") == 2  # x, and f shared by Gemm and MatMul
    assert ops.count("DequantizeLinear") == 5  # 2 activations + 3 weights
    inits = {t.name: numpy_helper.to_array(t) for t in qmodel.graph.initializer}
    assert {"w", "g", "m"}.isdisjoint(inits)  # float weights replaced
    assert inits["b"].dtype == np.float32  # the bias stays float
    dq_axes = {
        n.input[0]: {a.name: a.i for a in n.attribute}.get("axis")
        for n in qmodel.graph.node
        if n.op_type == "DequantizeLinear" and n.input[0].endswith("__int8")
    }
    assert dq_axes == {"w__axis0__int8": 0, "g__axis0__int8": 0, "m__axis1__int8": 1}
    assert all(inits[k].dtype == np.int8 for k in dq_axes)
    assert q.check_qdq_placement(qmodel) == []


def test_zero_activation_range_gets_a_usable_scale():
    model, *_ = _toy_model()
    qmodel = q.insert_qdq(model, {"x": 0.0, "f": 1.0})
    scale = {t.name: numpy_helper.to_array(t) for t in qmodel.graph.initializer}["x__qdq_scale"]
    assert float(scale) == pytest.approx(q.MIN_ACTIVATION_SCALE)


def test_missing_range_and_old_opset_are_refused():
    model, *_ = _toy_model()
    with pytest.raises(ExportError, match="no calibration range"):
        q.insert_qdq(model, {"x": 1.0})
    old = helper.make_model(model.graph, opset_imports=[helper.make_opsetid("", 11)])
    with pytest.raises(ExportError, match="opset >= 13"):
        q.insert_qdq(old, {"x": 1.0, "f": 1.0})


def test_placement_checker_catches_bad_graphs():
    """Hand-made violations: a DQ feeding a Sigmoid and the mask compare, a non-zero zero point."""
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
        helper.make_node("Sigmoid", ["xd"], ["y"]),
        helper.make_node("RandomUniformLike", ["x"], ["u"]),
        helper.make_node("GreaterOrEqual", ["xd", "u"], ["keep"]),
        helper.make_node("Cast", ["keep"], ["mask"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["xd", "mask"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "bad",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2]) for n in ("y", "out")],
        [
            numpy_helper.from_array(np.array(0.1, np.float32), "s"),
            numpy_helper.from_array(np.array(3, np.int8), "z"),
        ],
    )
    problems = " | ".join(q.check_qdq_placement(helper.make_model(graph)))
    assert "zero point is not 0" in problems
    assert "feeds ['GreaterOrEqual', 'Mul', 'Sigmoid']" in problems
    assert "MC mask node GreaterOrEqual" in problems
    assert "mask Mul" in problems


def test_config_validation():
    with pytest.raises(ConfigError, match="backend"):
        q.QDQConfig(backend="tensorrt")
    with pytest.raises(ConfigError, match="op_types"):
        q.QDQConfig(op_types=("Conv", "Add"))
    with pytest.raises(ConfigError, match="method"):
        q.QDQConfig(method="entropy")


# ---------------------------------------------------------------- the exported DRIFA-Net graphs


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


def test_qdq_graphs_are_valid_and_fully_placed(quantized):
    for graph in ("prefix", "suffix"):
        model = onnx.load(str(quantized["dir"] / f"{graph}.qdq.onnx"))
        onnx.checker.check_model(model, full_check=True)
        assert q.check_qdq_placement(model) == []
        report = quantized["reports"][graph]
        assert report["backend"] == "drifa"
        assert report["fully_quantized_nodes"] == report["quantizable_nodes"] > 0


def test_the_mc_mask_chain_stays_float(tiny_export, quantized):
    fp32 = onnx.load(str(tiny_export / "onnx" / "suffix.onnx"))
    qdq = onnx.load(str(quantized["dir"] / "suffix.qdq.onnx"))

    def count(model, op):
        return sum(n.op_type == op for n in model.graph.node)

    for op in ("RandomUniformLike", "GreaterOrEqual", "Cast", "Sigmoid", "Mul", "Add"):
        assert count(qdq, op) == count(fp32, op) > 0
    producers = {o: n.op_type for n in qdq.graph.node for o in n.output}
    for node in qdq.graph.node:
        if node.op_type in ("RandomUniformLike", "GreaterOrEqual", "Cast", "Mul", "Sigmoid"):
            assert not any(producers.get(i) == "DequantizeLinear" for i in node.input), node.name
        if node.op_type == "DequantizeLinear":
            consumers = {n.op_type for n in qdq.graph.node if node.output[0] in n.input}
            assert consumers <= {"Conv", "Gemm", "MatMul"}


def _logits(model, feeds):
    return session(model).run(None, feeds)


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


@pytest.mark.parametrize("factor", [0.25, 30.0])
def test_wrong_scales_fail_the_same_limit(tiny_export, quantized, factor):
    fp32 = onnx.load(str(tiny_export / "onnx" / "suffix.onnx"))
    activations, _ = q.quantization_sites(fp32)
    amax = q.collect_amax(fp32, activations, quantized["feeds"])
    wrong = q.insert_qdq(fp32, {k: v * factor for k, v in amax.items()})
    q.seed_random_nodes(fp32)
    q.seed_random_nodes(wrong)
    prefix = session(onnx.load(str(tiny_export / "onnx" / "prefix.onnx")))
    feats = prefix.run(FEATS, dict(zip(IMAGES, quantized["held_out"], strict=True)))
    feeds = dict(zip(FEATS, q.tile_cases(feats, 4), strict=True))
    ref, got = _logits(fp32, feeds), _logits(wrong, feeds)
    assert max(np.abs(r - g).max() / r.std() for r, g in zip(ref, got, strict=True)) > 0.1


def test_qdq_prefix_stays_close_to_fp32(tiny_export, quantized):
    """Deterministic graph: max |feature difference| <= 5 % of max |feature| (measured ~1 %)."""
    feeds = dict(zip(IMAGES, quantized["held_out"], strict=True))
    ref = session(onnx.load(str(tiny_export / "onnx" / "prefix.onnx"))).run(None, feeds)
    got = session(onnx.load(str(quantized["dir"] / "prefix.qdq.onnx"))).run(None, feeds)
    for r, g in zip(ref, got, strict=True):
        assert np.abs(r - g).max() <= 0.05 * np.abs(r).max()


def test_calibration_is_reproducible(tiny_export, quantized):
    model = onnx.load(str(tiny_export / "onnx" / "suffix.onnx"))
    activations, _ = q.quantization_sites(model)
    first = q.collect_amax(model, activations, quantized["feeds"][:1])
    second = q.collect_amax(model, activations, quantized["feeds"][:1])
    assert first == second
    pct = q.collect_amax(model, activations, quantized["feeds"][:1], method="percentile", percentile=99.0)
    assert all(pct[t] <= first[t] + 1e-7 for t in activations)


def test_modelopt_backend_requires_modelopt(tiny_export, quantized, tmp_path):
    if q.modelopt_available():
        pytest.skip("ModelOpt is installed here")
    from drifa_edge.errors import MissingDependencyError

    with pytest.raises(MissingDependencyError, match=r"drifa-edge\[tensorrt\]"):
        q.quantize_for_tensorrt(
            tiny_export / "onnx" / "suffix.onnx",
            tmp_path / "s.onnx",
            quantized["feeds"][:1],
            q.QDQConfig(backend="modelopt"),
        )


# ---------------------------------------------------------------- the export step that writes them


@pytest.mark.parametrize("masks", ["graph", "host"])
def test_prepare_int8_onnx_from_an_export_folder(tiny_export, images, tmp_path, masks):
    from drifa_edge.export.tensorrt import load_profile, prepare_int8_onnx

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
    from drifa_edge.export.tensorrt import load_profile, prepare_int8_onnx

    wrong = [images(4)[0], images(4)[0]]  # 3 channels where the x-ray task has 1
    with pytest.raises(BadInputError, match="xray.*expected \\(N, 1, 32, 32\\)"):
        prepare_int8_onnx(tiny_export, load_profile("desktop-cuda"), wrong, out_dir=tmp_path)
