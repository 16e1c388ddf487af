"""FP16 graphs for strongly typed TensorRT 11.x, checked on the CPU with onnxruntime.

The converted suffix must keep the MC-mask chain and the sigmoid gates in FP32, stay
stochastic, and stay close to the FP32 graph under identical (seeded) masks.
"""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxconverter_common", reason="pip install 'drifa-edge[tensorrt-prepare]'")

from drifa_edge.errors import ConfigError  # noqa: E402
from drifa_edge.quantize import mixed_precision as mp  # noqa: E402
from drifa_edge.quantize.scopes import onnx_mask_nodes  # noqa: E402
from drifa_edge.quantize.tensorrt_qdq import sigmoid_gates  # noqa: E402

# FP16 has a unit roundoff of 2**-11 ~ 4.9e-4; through the suffix's ~20 layers in series
# the measured max |logit difference| / max |logit| is 4e-4..8e-4 (onnxconverter-common and
# ModelOpt AutoCast alike, tiny model). The limit leaves ~10x room for other weights, and is
# still ~10x below what one wrongly FP16 mask threshold or a saturated gate would cost.
FP16_TOLERANCE = 1e-2


def mc_block(path):
    """x -> Conv -> h * sigmoid(Conv(h)) (a gate) -> MC dropout p=0.25 -> Conv -> mean: y (N, 4)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((4, 4, 3, 3)).astype(np.float32) * 0.3, f"w{i}")
        for i in range(3)
    ]
    inits += [
        numpy_helper.from_array(np.array(0.25, np.float32), "p"),
        numpy_helper.from_array(np.array(1 / 0.75, np.float32), "scale"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["h"], pads=[1, 1, 1, 1], name="conv0"),
        helper.make_node("Conv", ["h", "w1"], ["a"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Sigmoid", ["a"], ["g"], name="gate"),
        helper.make_node("Mul", ["h", "g"], ["hg"], name="gate_mul"),
        helper.make_node("RandomUniformLike", ["hg"], ["u"], name="rand"),
        helper.make_node("GreaterOrEqual", ["u", "p"], ["keep"], name="ge"),
        helper.make_node("Cast", ["keep"], ["mask"], to=TensorProto.FLOAT, name="cast"),
        helper.make_node("Mul", ["hg", "mask"], ["d"], name="mask_mul"),
        helper.make_node("Mul", ["d", "scale"], ["ds"], name="scale_mul"),
        helper.make_node("Conv", ["ds", "w2"], ["c"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("ReduceMean", ["c"], ["y"], axes=[2, 3], keepdims=0, name="mean"),
    ]
    graph = helper.make_graph(
        nodes,
        "mc_block",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_small_mc_block_keeps_mask_and_gate_fp32_and_stays_close(tmp_path):
    """The default-run version of the checks below, on a 11-node graph with one gate and one dropout."""
    src = mc_block(tmp_path / "block.onnx")
    report = mp.convert_fp16(src, tmp_path / "block.fp16.onnx", backend="onnxconverter")
    model = onnx.load(str(tmp_path / "block.fp16.onnx"))
    keep = mp.keep_fp32_nodes(onnx.load(str(src)).graph)
    assert keep == ["cast", "gate", "gate_mul", "ge", "mask_mul", "rand", "scale_mul"]
    assert mp.fp16_problems(model, keep) == [] and report["fp16_tensors"] > 0
    types = mp._float_types(model)
    assert types["h"] == onnx.TensorProto.FLOAT16 and types["c"] == onnx.TensorProto.FLOAT16  # convs FP16
    x = np.random.default_rng(1).standard_normal((16, 4, 6, 6)).astype(np.float32)
    result = mp.compare_fp16(src, tmp_path / "block.fp16.onnx", {"x": x}, ["y"])
    assert result["stochastic"] and 0 < result["max_rel"] <= FP16_TOLERANCE


def test_small_mc_block_rule_catches_an_fp16_mask(tmp_path):
    from onnxconverter_common import float16

    model = onnx.load(str(mc_block(tmp_path / "block.onnx")))
    keep = mp.keep_fp32_nodes(model.graph)
    problems = " | ".join(mp.fp16_problems(float16.convert_float_to_float16(model, keep_io_types=True), keep))
    assert "GreaterOrEqual 'ge' must stay FP32" in problems and "Sigmoid 'gate' must stay FP32" in problems


# The exported DRIFA-Net suffix: marked slow, converting its 2,300 nodes (shape inference,
# onnxconverter-common) takes ~35 s on this shared machine.


@pytest.fixture(scope="module")
def fp16_suffix(tiny_export, tmp_path_factory):
    out = tmp_path_factory.mktemp("fp16") / "suffix.fp16.onnx"
    report = mp.convert_fp16(tiny_export / "onnx" / "suffix.onnx", out, backend="onnxconverter")
    return out, report


def _feeds(n: int = 12, seed: int = 0):
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal((n, 8, 8, 8)).astype(np.float32) for name in ("feat_derm", "feat_xray")}


@pytest.mark.slow
def test_mask_chain_and_gates_stay_fp32(tiny_export, fp16_suffix):
    path, report = fp16_suffix
    model = onnx.load(str(path))
    assert report["backend"] == "onnxconverter" and report["fp16_tensors"] > 0
    fp32 = onnx.load(str(tiny_export / "onnx" / "suffix.onnx"))
    keep = mp.keep_fp32_nodes(fp32.graph)
    assert set(onnx_mask_nodes(fp32.graph)) | set(sigmoid_gates(fp32.graph)) <= set(keep)
    assert len(onnx_mask_nodes(fp32.graph)) == 65 and len(sigmoid_gates(fp32.graph)) == 92
    assert report["kept_fp32_nodes"] == len(keep)
    assert mp.fp16_problems(model, keep) == []
    # the random draw itself and the compare against p read FP32
    types = mp._float_types(model)
    for n in model.graph.node:
        if n.op_type in ("RandomUniformLike", "GreaterOrEqual"):
            assert all(types.get(i) == onnx.TensorProto.FLOAT for i in n.input if i in types), n.name
    assert mp.is_fp16_graph(path) and not mp.is_fp16_graph(tiny_export / "onnx" / "suffix.onnx")
    graph_io = {i.name: i.type.tensor_type.elem_type for i in (*model.graph.input, *model.graph.output)}
    assert set(graph_io.values()) == {onnx.TensorProto.FLOAT}  # runtimes see FP32 in and out


@pytest.mark.slow
def test_fp16_suffix_is_stochastic_and_close_to_fp32(tiny_export, fp16_suffix):
    path, _ = fp16_suffix
    outputs = [o.name for o in onnx.load(str(path)).graph.output]
    result = mp.compare_fp16(tiny_export / "onnx" / "suffix.onnx", path, _feeds(), outputs)
    assert result["stochastic"]
    assert result["max_rel"] <= FP16_TOLERANCE
    assert result["max_rel"] > 0  # really FP16 arithmetic, not an FP32 copy


@pytest.mark.slow
def test_the_rule_catches_an_fp16_mask_chain(tiny_export):
    """Negative control: converting everything (no block list) is refused by fp16_problems."""
    from onnxconverter_common import float16

    model = onnx.load(str(tiny_export / "onnx" / "suffix.onnx"))
    mp._inline_identity_initializers(model)
    keep = mp.keep_fp32_nodes(model.graph)
    everything = float16.convert_float_to_float16(model, keep_io_types=True)
    problems = " | ".join(mp.fp16_problems(everything, keep))
    assert "must stay FP32" in problems
    assert "GreaterOrEqual" in problems and "Sigmoid" in problems


def test_unknown_backend_is_refused(tiny_export, tmp_path):
    with pytest.raises(ConfigError, match="fp16 backend"):
        mp.convert_fp16(tiny_export / "onnx" / "prefix.onnx", tmp_path / "p.onnx", backend="autocast")
