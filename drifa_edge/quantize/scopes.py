"""Which nodes of an exported graph stay in float: the ignored-scope policies.

Everything here reads the graph's structure (op types and edges), not node
names, so it works on whatever names an exporter chose. Two graph flavours:

- OpenVINO ``ov.Model`` (for NNCF on IR): the MC dropout is
  ``ShapeOf -> RandomUniform -> GreaterEqual -> Convert -> Multiply(x, mask) -> Multiply(., 1/(1-p))``
  (``suffix_masks`` feeds a ``uniform_<i>`` Parameter instead of RandomUniform).
- ONNX ``ModelProto`` (for ONNX Runtime and NNCF-ONNX): the same chain with
  ``RandomUniformLike -> GreaterOrEqual -> Cast -> Mul -> Mul``.

Policies (see :mod:`drifa_edge.quantize.config`) return the node names whose
*inputs* must not be quantized; the MC-mask chain is in every one of them, so a
mask is never rounded and the random ops survive quantization untouched.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from drifa_edge.errors import ConfigError

# --------------------------------------------------------------------------- OpenVINO

OV_RANDOM = "RandomUniform"
_OV_MASK_CHAIN = ("GreaterEqual", "Greater", "Convert", "Select")
_OV_SKIP = ("Constant", "Parameter", "Result")


def _ov_consumers(node: Any) -> list[Any]:
    return [t.get_node() for out in node.outputs() for t in out.get_target_inputs()]


def _ov_is_const(output: Any) -> bool:
    return output.get_node().get_type_name() == "Constant"


def is_uniform_parameter(node: Any) -> bool:
    return node.get_type_name() == "Parameter" and any(
        n.startswith("uniform_") for n in node.output(0).get_names()
    )


def ov_mask_nodes(model: Any) -> list[str]:
    """Friendly names of the MC-mask chain of every dropout: random source, compare,
    convert, the mask Multiply and the constant 1/(1-p) Multiply next to it."""
    names: set[str] = set()
    for op in model.get_ordered_ops():
        if op.get_type_name() != OV_RANDOM and not is_uniform_parameter(op):
            continue
        names.add(op.get_friendly_name())
        for inp in op.inputs():  # ShapeOf(x) that sizes the random tensor
            src = inp.get_source_output().get_node()
            if src.get_type_name() in ("ShapeOf",):
                names.add(src.get_friendly_name())
        frontier = _ov_consumers(op)
        while frontier:
            node = frontier.pop()
            kind = node.get_type_name()
            if kind in _OV_MASK_CHAIN:
                names.add(node.get_friendly_name())
                frontier.extend(_ov_consumers(node))
            elif kind == "Multiply" and any(_ov_is_const(i.get_source_output()) for i in node.inputs()):
                names.add(node.get_friendly_name())  # mask * 1/(1-p) before meeting x
                frontier.extend(_ov_consumers(node))
            elif kind == "Multiply":
                names.add(node.get_friendly_name())
                names.update(_ov_scale_neighbours(node))
    return sorted(names)


def _ov_scale_neighbours(mask_mul: Any) -> list[str]:
    """The constant-scale Multiply right before or after the mask Multiply (the 1/(1-p))."""
    out = []
    consumers = _ov_consumers(mask_mul)
    if len(consumers) == 1 and consumers[0].get_type_name() == "Multiply":
        if any(_ov_is_const(i.get_source_output()) for i in consumers[0].inputs()):
            out.append(consumers[0].get_friendly_name())
    for inp in mask_mul.inputs():
        src = inp.get_source_output().get_node()
        if src.get_type_name() == "Multiply" and len(_ov_consumers(src)) == 1:
            if any(_ov_is_const(i.get_source_output()) for i in src.inputs()):
                out.append(src.get_friendly_name())
    return out


def _ov_spatial_input(op: Any) -> bool:
    """True when the op's first input is a feature map with more than one pixel."""
    shape = op.input(0).get_partial_shape()
    if shape.rank.is_dynamic or shape.rank.get_length() != 4:
        return False
    h, w = shape[2], shape[3]
    if h.is_dynamic or w.is_dynamic:
        return True  # unknown spatial size: treat as a feature map
    return h.get_length() * w.get_length() > 1


def ov_policy_quantized_ops(model: Any, scope: str) -> list[str] | None:
    """Names of the ops whose inputs a policy quantizes; ``None`` = let NNCF decide."""
    if scope == "all":
        return None
    ops = [op for op in model.get_ordered_ops() if op.get_type_name() not in _OV_SKIP]
    if scope == "conv-matmul":
        keep = ("Convolution", "GroupConvolution", "MatMul")
        return [op.get_friendly_name() for op in ops if op.get_type_name() in keep]
    if scope in ("attention-fp32", "sensitivity"):
        return [
            op.get_friendly_name()
            for op in ops
            if op.get_type_name() in ("Convolution", "GroupConvolution") and _ov_spatial_input(op)
        ]
    raise ConfigError(f"unknown ignored-scope policy {scope!r}")


def ov_ignored_names(model: Any, scope: str, keep_float: Iterable[str] = ()) -> list[str]:
    """Every node name a policy keeps in float (the mask chain always included)."""
    ignored = set(ov_mask_nodes(model))
    quantized = ov_policy_quantized_ops(model, scope)
    if quantized is not None:
        chosen = set(quantized) - set(keep_float)
        ignored.update(
            op.get_friendly_name()
            for op in model.get_ordered_ops()
            if op.get_type_name() not in _OV_SKIP and op.get_friendly_name() not in chosen
        )
    present = {op.get_friendly_name() for op in model.get_ordered_ops()}
    ignored.update(n for n in keep_float if n in present)
    return sorted(ignored)


def ov_fake_quantize_sites(model: Any) -> dict[str, list[str]]:
    """{consumer name: [its op type, ...]} for every FakeQuantize on an activation
    (weights, i.e. FakeQuantize over a Constant, are left out)."""
    sites: dict[str, list[str]] = {}
    for op in model.get_ordered_ops():
        if op.get_type_name() != "FakeQuantize":
            continue
        src = op.input(0).get_source_output().get_node()
        if src.get_type_name() == "Constant" or _is_weight_path(src):
            continue
        for node in _ov_consumers(op):
            sites.setdefault(node.get_friendly_name(), []).append(node.get_type_name())
    return sites


def _is_weight_path(node: Any) -> bool:
    """A Convert/Multiply/Subtract chain that only reads constants (decompressed weights)."""
    if node.get_type_name() == "Constant":
        return True
    if node.get_type_name() not in ("Convert", "Multiply", "Subtract", "Reshape"):
        return False
    return all(_is_weight_path(i.get_source_output().get_node()) for i in node.inputs())


def ov_quantized_ops(model: Any) -> set[str]:
    """Names of the ops that read at least one quantized activation."""
    return set(ov_fake_quantize_sites(model))


# --------------------------------------------------------------------------- ONNX

ONNX_RANDOM = ("RandomUniformLike", "RandomUniform")
_ONNX_MASK_CHAIN = ("GreaterOrEqual", "Greater", "Cast", "Where")


def onnx_mask_nodes(graph: Any) -> list[str]:
    """Names of the MC-mask chain in an ONNX graph (random op or ``uniform_<i>`` input,
    compare, cast, mask Mul and the constant-scale Mul beside it)."""
    consumers: dict[str, list[Any]] = {}
    producer: dict[str, Any] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
        for name in node.output:
            producer[name] = node
    constants = {i.name for i in graph.initializer} | {
        n.output[0] for n in graph.node if n.op_type == "Constant"
    }
    names: set[str] = set()
    starts = [n.output[0] for n in graph.node if n.op_type in ONNX_RANDOM]
    starts += [i.name for i in graph.input if i.name.startswith("uniform_")]
    for n in graph.node:
        if n.op_type in ONNX_RANDOM:
            names.add(n.name)
    for tensor in starts:
        frontier = list(consumers.get(tensor, []))
        while frontier:
            node = frontier.pop()
            if node.op_type in _ONNX_MASK_CHAIN:
                names.add(node.name)
                frontier.extend(c for out in node.output for c in consumers.get(out, []))
            elif node.op_type == "Mul" and any(i in constants for i in node.input):
                names.add(node.name)  # mask * 1/(1-p) before meeting x
                frontier.extend(c for out in node.output for c in consumers.get(out, []))
            elif node.op_type == "Mul":
                names.add(node.name)
                nxt = consumers.get(node.output[0], [])
                if len(nxt) == 1 and nxt[0].op_type == "Mul" and any(i in constants for i in nxt[0].input):
                    names.add(nxt[0].name)
                for i in node.input:
                    prev = producer.get(i)
                    if prev is not None and prev.op_type == "Mul" and any(j in constants for j in prev.input):
                        if len(consumers.get(prev.output[0], [])) == 1:
                            names.add(prev.name)
    return sorted(names)


def onnx_ignored_names(model: Any, scope: str, keep_float: Iterable[str] = ()) -> list[str]:
    """Node names a policy keeps in float in an ONNX graph (mask chain always included).

    Spatial sizes come from ONNX shape inference; ``attention-fp32`` quantizes
    Conv nodes whose input is a feature map larger than 1x1."""
    import onnx

    graph = model.graph
    ignored = set(onnx_mask_nodes(graph))
    if scope != "all":
        if scope == "conv-matmul":
            chosen = {n.name for n in graph.node if n.op_type in ("Conv", "Gemm", "MatMul")}
        elif scope in ("attention-fp32", "sensitivity"):
            inferred = onnx.shape_inference.infer_shapes(model)
            dims = {}
            for vi in list(inferred.graph.value_info) + list(inferred.graph.input):
                d = vi.type.tensor_type.shape.dim
                dims[vi.name] = [x.dim_value if x.HasField("dim_value") else None for x in d]
            chosen = {
                n.name for n in graph.node if n.op_type == "Conv" and _onnx_spatial(dims.get(n.input[0]))
            }
        else:
            raise ConfigError(f"unknown ignored-scope policy {scope!r}")
        chosen -= set(keep_float)
        ignored.update(n.name for n in graph.node if n.name not in chosen)
    present = {n.name for n in graph.node}
    ignored.update(n for n in keep_float if n in present)
    return sorted(ignored)


def _onnx_spatial(shape: list[int | None] | None) -> bool:
    if shape is None or len(shape) != 4:
        return True  # unknown: treat as a feature map
    h, w = shape[2], shape[3]
    return h is None or w is None or h * w > 1
