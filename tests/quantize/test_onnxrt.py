"""ONNX Runtime INT8 (ORT static quantization, QDQ): loads, stays stochastic, agrees
with FP32, and never puts Q/DQ on the MC-mask chain."""

from __future__ import annotations

import collections

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

AGREEMENT_MIN = 0.8  # as for OpenVINO (see tests/quantize/test_nncf.py)


def _runtime(path, precision):
    from drifa_edge.runtimes.base import RuntimeOptions, open_runtime

    return open_runtime("onnxruntime", path, RuntimeOptions(precision=precision))


def test_ort_int8_loads_runs_and_agrees(ort_int8, synthetic_cases):
    from drifa_edge.inference.engine import EngineConfig, run_mc

    path, section = ort_int8
    images, _ = synthetic_cases
    cfg = EngineConfig(samples=64)
    int8 = run_mc([_runtime(path, "int8")], images, cfg)
    fp32 = run_mc([_runtime(path, "fp32")], images, cfg)
    for task in int8:
        agree = np.mean(int8[task].mean(1).argmax(-1) == fp32[task].mean(1).argmax(-1))
        assert agree >= AGREEMENT_MIN, f"{task}: {agree:.2f}"
    assert section["calibration"]["subset"] > 0 and len(section["calibration"]["sha256"]) == 64


def test_ort_int8_stays_stochastic(ort_int8, synthetic_cases):
    path, _ = ort_int8
    model = onnx.load(str(path / "onnx-int8" / "suffix.onnx"))
    ops = collections.Counter(n.op_type for n in model.graph.node)
    from drifa_edge.artifact.card import read_card
    from drifa_edge.model.config import dropout_shapes

    assert ops["RandomUniformLike"] == len(dropout_shapes(read_card(path).model))
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0
    rt = _runtime(path, "int8")
    images, _ = synthetic_cases
    feats = [np.repeat(f[:1], 6, axis=0) for f in rt.run_prefix([x[:1] for x in images])]
    a, b = rt.run_suffix(feats), rt.run_suffix(feats)
    assert not np.allclose(a[0], b[0])


def test_mask_chain_never_touches_qdq(ort_int8):
    """Q/DQ wherever the policy lets ORT quantize, never on the MC-mask chain: it neither
    reads a dequantized tensor nor feeds a QuantizeLinear."""
    from drifa_edge.quantize import scopes

    path, _ = ort_int8
    for graph in ("suffix", "suffix_masks", "suffix_det"):
        model = onnx.load(str(path / "onnx-int8" / f"{graph}.onnx"))
        names = set(scopes.onnx_mask_nodes(model.graph))
        masks = {n.name: n for n in model.graph.node if n.name in names}
        mask_outputs = {o for n in masks.values() for o in n.output}
        dequantized = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
        readers = collections.Counter()
        for node in model.graph.node:
            if node.name in masks:
                assert not set(node.input) & dequantized, f"{graph}: {node.name} reads a dequantized tensor"
            elif node.op_type == "QuantizeLinear":
                assert node.input[0] not in mask_outputs - {
                    n.output[0] for n in masks.values() if n.op_type == "Mul"
                }, f"{graph}: {node.name} quantizes a mask"
            if set(node.input) & dequantized:
                readers[node.op_type] += 1
        assert readers["Conv"] > 0, f"{graph}: no Conv reads a dequantized input ({readers})"
