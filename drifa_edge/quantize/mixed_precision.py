"""FP16 ONNX graphs for strongly typed TensorRT (11.x), with the MC-mask chain and sigmoid gates in FP32.

TensorRT 11 removed ``BuilderFlag.FP16``: a network is strongly typed and runs in
the types its ONNX graph carries, so an FP16 engine needs an FP16 (mixed
precision) graph. :func:`convert_fp16` writes one, with

- ModelOpt AutoCast (``modelopt.onnx.autocast.convert_to_mixed_precision``) when it
  is installed and ``backend`` allows it, or
- ``onnxconverter-common``'s ``float16.convert_float_to_float16`` otherwise,

and in both cases these nodes stay FP32 (Casts are inserted around them): the MC
dropout chain (RandomUniformLike -> GreaterOrEqual -> Cast -> mask Mul -> 1/(1-p)
Mul, :func:`drifa_edge.quantize.scopes.onnx_mask_nodes`), every gating Sigmoid
(:func:`drifa_edge.quantize.tensorrt_qdq.sigmoid_gates`) and the Mul that applies
it. Inputs and outputs stay FP32 (``keep_io_types``), so runtimes and the card do
not change. :func:`fp16_problems` checks a converted graph for that rule.

Runs on any machine with onnx (and onnxruntime for :func:`compare_fp16`); no GPU.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from drifa_edge.errors import ConfigError, ExportError, missing_dependency

log = logging.getLogger(__name__)

BACKENDS = ("auto", "modelopt", "onnxconverter")
FLOAT16 = 10  # onnx.TensorProto.FLOAT16


def keep_fp32_nodes(graph: Any) -> list[str]:
    """Names of the nodes an FP16 graph must keep in FP32: mask chain, sigmoid gates, gate Muls."""
    from drifa_edge.quantize.scopes import onnx_mask_nodes
    from drifa_edge.quantize.tensorrt_qdq import sigmoid_gates

    keep = set(onnx_mask_nodes(graph))
    gates = set(sigmoid_gates(graph))
    keep |= gates
    gate_out = {o for n in graph.node if n.name in gates for o in n.output}
    producer = {o: n for n in graph.node for o in n.output}
    for n in graph.node:
        if n.op_type == "Mul" and any(_behind_reshapes(i, producer) & gate_out for i in n.input):
            keep.add(n.name)
    return sorted(keep)


def _behind_reshapes(tensor: str, producer: dict) -> set[str]:
    seen = {tensor}
    node = producer.get(tensor)
    while node is not None and node.op_type in ("Identity", "Unsqueeze", "Reshape", "Flatten", "Squeeze"):
        seen.add(node.input[0])
        node = producer.get(node.input[0])
    return seen


def modelopt_autocast_available() -> bool:
    try:
        import modelopt.onnx.autocast  # noqa: F401
    except Exception:  # ImportError, or ModelOpt creating a trt.Builder on a machine without a GPU
        return False
    return True


def convert_fp16(onnx_in: str | Path, onnx_out: str | Path, backend: str = "auto") -> dict[str, Any]:
    """Write an FP16 (mixed precision) copy of ``onnx_in``; return a report.

    Raises ConfigError for an unknown backend, MissingDependencyError when neither
    converter is installed, ExportError when the result breaks :func:`fp16_problems`.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"fp16 backend must be one of {BACKENDS}, got {backend!r}")
    try:
        import onnx
    except ImportError as e:
        raise missing_dependency("onnx", "onnx") from e
    onnx_in, onnx_out = Path(onnx_in), Path(onnx_out)
    model = onnx.load(str(onnx_in))
    _inline_identity_initializers(model)
    keep = keep_fp32_nodes(model.graph)
    chosen = backend
    if backend == "auto":
        chosen = "modelopt" if modelopt_autocast_available() else "onnxconverter"
    if chosen == "modelopt":
        try:
            from modelopt.onnx.autocast import convert_to_mixed_precision
        except ImportError as e:
            raise missing_dependency("nvidia-modelopt", "modelopt") from e
        converted = convert_to_mixed_precision(  # nodes_to_exclude are regular expressions
            onnx_path=str(onnx_in),
            low_precision_type="fp16",
            nodes_to_exclude=["^" + re.escape(n) + "$" for n in keep],
            keep_io_types=True,
        )
    else:
        try:
            from onnxconverter_common import float16
        except ImportError as e:
            raise missing_dependency("onnxconverter-common", "tensorrt-prepare") from e
        converted = float16.convert_float_to_float16(
            model, keep_io_types=True, node_block_list=keep, disable_shape_infer=False
        )
    problems = fp16_problems(converted, keep)
    if problems:
        raise ExportError(
            f"{onnx_in.name}: the FP16 graph from {chosen} breaks drifa-edge's rule: "
            + "; ".join(problems[:3])
        )
    onnx_out.parent.mkdir(parents=True, exist_ok=True)
    tmp = onnx_out.with_suffix(".tmp")
    onnx.save(converted, str(tmp))
    tmp.replace(onnx_out)
    return {"backend": chosen, "kept_fp32_nodes": len(keep), **fp16_summary(converted)}


def _inline_identity_initializers(model: Any) -> int:
    """Replace ``Identity(initializer)`` nodes by a copy of the initializer, in place.

    The torch exporter shares equal parameters through Identity nodes; when one
    consumer stays FP32 and another becomes FP16, onnxconverter-common types the
    Identity's output wrongly and onnxruntime refuses the graph. Returns the count.
    """
    inits = {t.name: t for t in model.graph.initializer}
    outputs = {o.name for o in model.graph.output}
    keep, added = [], []
    for n in model.graph.node:
        if n.op_type == "Identity" and n.input[0] in inits and n.output[0] not in outputs:
            copy = type(inits[n.input[0]])()
            copy.CopyFrom(inits[n.input[0]])
            copy.name = n.output[0]
            added.append(copy)
        else:
            keep.append(n)
    if added:
        del model.graph.node[:]
        model.graph.node.extend(keep)
        model.graph.initializer.extend(added)
        names = {t.name for t in added}
        kept_vi = [v for v in model.graph.value_info if v.name not in names]
        del model.graph.value_info[:]
        model.graph.value_info.extend(kept_vi)
    return len(added)


def _float_types(model: Any) -> dict[str, int]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    types = {}
    for vi in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output):
        types[vi.name] = vi.type.tensor_type.elem_type
    for t in inferred.graph.initializer:
        types[t.name] = t.data_type
    return types


def fp16_problems(model: Any, keep: list[str] | None = None) -> list[str]:
    """What is wrong with an FP16 graph for drifa-edge; empty when fine.

    Every kept node (mask chain, gates, gate Muls; by name, taken from the graph
    when ``keep`` is None) must read and write FP32 (booleans for the compare), and
    the graph must hold FP16 somewhere (or it is not an FP16 graph).
    """
    import onnx

    keep = set(keep if keep is not None else keep_fp32_nodes(model.graph))
    types = _float_types(model)
    problems = []
    present = {n.name for n in model.graph.node}
    missing = sorted(keep - present)
    if missing:
        problems.append(f"nodes {missing[:3]} of the MC chain / gates are gone")
    for n in model.graph.node:
        if n.name not in keep:
            continue
        for t in [*n.input, *n.output]:
            if types.get(t) == onnx.TensorProto.FLOAT16:
                problems.append(f"{n.op_type} {n.name!r} must stay FP32 but {t!r} is FP16")
                break
    if not any(v == onnx.TensorProto.FLOAT16 for v in types.values()):
        problems.append("no FP16 tensor in the graph")
    return problems


def fp16_summary(model: Any) -> dict[str, int]:
    types = _float_types(model)
    return {
        "fp16_tensors": sum(v == FLOAT16 for v in types.values()),
        "fp32_tensors": sum(v == 1 for v in types.values()),
        "casts": sum(n.op_type == "Cast" for n in model.graph.node),
    }


def is_fp16_graph(path: str | Path) -> bool:
    """True when the ONNX graph at ``path`` carries FP16 initializers or casts to FP16."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    if any(t.data_type == FLOAT16 for t in model.graph.initializer):
        return True
    return any(
        n.op_type == "Cast" and any(a.name == "to" and a.i == FLOAT16 for a in n.attribute)
        for n in model.graph.node
    )


def compare_fp16(
    fp32_path: str | Path, fp16_path: str | Path, feeds: dict[str, np.ndarray], outputs: list[str]
) -> dict[str, float]:
    """FP16 graph vs FP32 graph under identical MC masks, by onnxruntime on the CPU.

    Both graphs get the same seeds on their random nodes (node i -> seed 1 + i), so
    the masks match and the difference is FP16 arithmetic only. Returns the largest
    |difference| of each output over the largest |fp32 value| of that output
    (``max_rel``), and whether two unseeded runs of the FP16 graph differ
    (``stochastic``: the MC masks are still drawn per call).
    """
    import onnx

    from drifa_edge.quantize.tensorrt_qdq import _ort_session, seed_random_nodes

    a, b = onnx.load(str(fp32_path)), onnx.load(str(fp16_path))
    seed_random_nodes(a)
    seed_random_nodes(b)
    ref = _ort_session(a.SerializeToString()).run(outputs, feeds)
    got = _ort_session(b.SerializeToString()).run(outputs, feeds)
    rel = max(
        float(np.abs(g - r).max()) / max(float(np.abs(r).max()), 1e-12) for g, r in zip(got, ref, strict=True)
    )
    free = _ort_session(Path(fp16_path).read_bytes())
    first, second = free.run(outputs, feeds), free.run(outputs, feeds)
    stochastic = any(not np.array_equal(x, y) for x, y in zip(first, second, strict=True))
    return {"max_rel": rel, "stochastic": bool(stochastic)}
