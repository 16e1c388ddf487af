"""Graph rewrites applied to every exported ONNX graph: the same function, fewer operations.

The PyTorch model stays the paper's formulation (the reference every parity check compares
against); the exported graphs get rewrites that are exact in real arithmetic and leave float32
results within round-off:

- ``sigmoid-after-extremum``: ``ReduceMax(Sigmoid(z)) -> Sigmoid(ReduceMax(z))`` (same for
  ReduceMin) when the sigmoid's only consumers are such reductions. The logistic function is
  strictly increasing, so the maximum (minimum) of sigmoid(z) over any axes is the sigmoid of
  the maximum (minimum) of z; the sigmoid then runs on the reduced (B, C) tensor instead of the
  whole (B, C, H, W) map. In DRIFA-Net that is HIFA's fourth map (``a4``, only ever max-pooled):
  one full-map sigmoid of the five per MFA, 42 in the paper configuration's MC suffix.

Measured on the paper configuration (``benchmarks/suffix_ops.py``, README "Fewer, cheaper
ops"). A rewrite that did not pay off is not here: see the README for the ones measured and
dropped (one random draw for all dropout sites, channels-last random draws, tanh-form sigmoid).
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

REWRITES = ("sigmoid-after-extremum",)
_EXTREMA = ("ReduceMax", "ReduceMin")


@dataclass(frozen=True)
class RewriteReport:
    """What the rewrites changed in one graph: rewrite name -> number of places."""

    counts: dict[str, int]

    def to_dict(self) -> dict[str, int]:
        return dict(self.counts)


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    out: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            out.setdefault(name, []).append(node)
    return out


def sigmoid_after_extremum(graph: onnx.GraphProto) -> int:
    """Move every Sigmoid whose only consumers are ReduceMax/ReduceMin after them, in place.

    Each reduction then reads the sigmoid's input and feeds a Sigmoid of its own that
    produces the reduction's original output (axes, keepdims and every name downstream are
    kept). Returns the number of Sigmoid nodes moved."""
    consumers = _consumers(graph)
    graph_outputs = {o.name for o in graph.output}
    movable = set()
    for node in graph.node:
        users = consumers.get(node.output[0], []) if node.op_type == "Sigmoid" else []
        if (
            users
            and node.output[0] not in graph_outputs
            and all(u.op_type in _EXTREMA and list(u.input[:1]) == [node.output[0]] for u in users)
        ):
            movable.add(node.output[0])
    if not movable:
        return 0
    sources = {
        n.output[0]: n.input[0] for n in graph.node if n.op_type == "Sigmoid" and n.output[0] in movable
    }
    ordered: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.op_type == "Sigmoid" and node.output[0] in movable:
            continue  # reappears after each of its reductions
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        if copy.op_type in _EXTREMA and copy.input and copy.input[0] in movable:
            original = copy.output[0]
            copy.input[0] = sources[copy.input[0]]
            copy.output[0] = f"{original}/before_sigmoid"
            ordered.append(copy)
            ordered.append(
                onnx.helper.make_node("Sigmoid", [copy.output[0]], [original], name=f"{copy.name}/sigmoid")
            )
            continue
        ordered.append(copy)
    del graph.node[:]
    graph.node.extend(ordered)
    return len(movable)


def apply_rewrites(model: onnx.ModelProto) -> RewriteReport:
    """Every rewrite of :data:`REWRITES` on ``model``'s main graph, in place."""
    counts = {"sigmoid-after-extremum": sigmoid_after_extremum(model.graph)}
    return RewriteReport(counts)
