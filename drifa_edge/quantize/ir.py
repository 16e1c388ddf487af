"""OpenVINO IR helpers shared by the INT8 flows and benchmarks (openvino imported lazily).

Compile in true FP32, run a compiled graph, prefix features for calibration,
calibration items, fixed seeds for the in-graph random ops (paired FP32-vs-INT8
comparisons), copying activation ranges between two quantized graphs, and the
surgery that cuts ``suffix_det`` (dropout bypassed) and ``suffix_masks`` (random
ops replaced by ``uniform_<i>`` inputs) out of a quantized MC suffix.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from drifa_edge.artifact import layout
from drifa_edge.quantize import scopes
from drifa_edge.quantize.calibration_set import tile_rows
from drifa_edge.runtimes.threads import openvino_properties, resolve_threads


def compile_fp32(core: Any, model: Any, threads: int | None = None):
    """Compile on CPU in true FP32 (OpenVINO would pick bf16 on CPUs that have it)."""
    config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
    config.update(openvino_properties(resolve_threads(threads)))
    return core.compile_model(model, "CPU", config)


def run_compiled(compiled: Any, feeds: dict[str, np.ndarray], outputs: Sequence[str]) -> list[np.ndarray]:
    result = compiled(feeds)
    return [np.array(result[compiled.output(n)], dtype=np.float32) for n in outputs]


def prefix_features(core: Any, prefix: Any, card: Any, images: Sequence[np.ndarray], batch: int = 16):
    """FP32 prefix features of every calibration image, per task (N, C, H, W)."""
    compiled = compile_fp32(core, prefix)
    tasks = card.task_names
    names_in = [layout.image_name(t) for t in tasks]
    names_out = [layout.feature_name(t) for t in tasks]
    parts: list[list[np.ndarray]] = [[] for _ in tasks]
    for start in range(0, images[0].shape[0], batch):
        feeds = {n: x[start : start + batch] for n, x in zip(names_in, images, strict=True)}
        for k, f in enumerate(run_compiled(compiled, feeds, names_out)):
            parts[k].append(f)
    return [np.concatenate(p) for p in parts]


def uniform_shapes(model: Any) -> dict[str, tuple[int, ...]]:
    """{uniform_<i>: (C, H, W)} of a ``suffix_masks`` graph."""
    out = {}
    for p in model.get_parameters():
        name = p.get_output_tensor(0).get_any_name()
        if name.startswith("uniform_"):
            out[name] = tuple(d.get_length() for d in p.get_partial_shape()[1:])
    return out


def seed_random_ops(model: Any, seed: int) -> Any:
    """Give every RandomUniform a fixed (global, op) seed, in place.

    A freshly compiled model then draws the same masks call after call, whatever
    its precision: two builds compared on the same inputs see the same masks, which
    removes the MC noise from an FP32-vs-INT8 comparison. For evaluation only; the
    saved graphs keep zero seeds (a fresh stream per compiled model)."""
    from openvino import opset8

    k = 0
    for op in model.get_ordered_ops():
        if op.get_type_name() != scopes.OV_RANDOM:
            continue
        k += 1
        a = op.get_attributes()
        new = opset8.random_uniform(
            op.input_value(0), op.input_value(1), op.input_value(2), a["output_type"], int(seed), k
        )
        new.set_friendly_name(op.get_friendly_name())
        op.output(0).replace(new.output(0))
    model.validate_nodes_and_infer_types()
    return model


def copy_activation_ranges(source: Any, target: Any) -> tuple[int, int]:
    """Copy the ranges of activation FakeQuantize nodes from ``source`` onto the FakeQuantize
    of ``target`` that feeds the same consumers (matched by consumer names). Returns
    (copied, unmatched). Used to calibrate the MC graphs with masks off."""
    from openvino import opset8

    def index(model):
        out = {}
        for op in model.get_ordered_ops():
            if (
                op.get_type_name() != "FakeQuantize"
                or op.input(0).get_source_output().get_node().get_type_name() == "Constant"
            ):
                continue
            consumers = frozenset(t.get_node().get_friendly_name() for t in op.output(0).get_target_inputs())
            out[consumers] = op
        return out

    src, dst = index(source), index(target)
    copied = 0
    for key, fq in dst.items():
        match = src.get(key)
        if match is None:
            continue
        for port in range(1, 5):
            value = match.input_value(port).get_node().get_data()
            fq.input(port).replace_source_output(opset8.constant(value).output(0))
        copied += 1
    target.validate_nodes_and_infer_types()
    return copied, len(dst) - copied


# ---- calibration items ----


def suffix_items(
    card: Any, features: Sequence[np.ndarray], rows: int, masks_on: bool, seed: int, shapes=None
):
    """Calibration items of a suffix graph: masks on = one case tiled ``rows`` times per
    item (``shapes`` given: plus seeded uniforms for ``suffix_masks``); off = one row per case."""
    names = [layout.feature_name(t) for t in card.task_names]
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 7])
    items = []
    for case in range(features[0].shape[0]):
        arrays = tile_rows(features, case, rows) if masks_on else [f[case : case + 1] for f in features]
        item = dict(zip(names, arrays, strict=True))
        for name, shape in (shapes or {}).items():
            item[name] = rng.random((arrays[0].shape[0], *shape), dtype=np.float32)
        items.append(item)
    return items


def image_items(card: Any, images: Sequence[np.ndarray]) -> list[dict[str, np.ndarray]]:
    names = [layout.image_name(t) for t in card.task_names]
    return [{n: x[i : i + 1] for n, x in zip(names, images, strict=True)} for i in range(images[0].shape[0])]


# ---- the other two suffix graphs from the quantized MC suffix ----


def _consumers(node: Any) -> list[Any]:
    return [t.get_node() for out in node.outputs() for t in out.get_target_inputs()]


def _mask_multiplies(source: Any) -> tuple[Any, Any]:
    """From a random source (RandomUniform or uniform Parameter): the Multiply that applies
    the mask to x and the last node of the dropout (the 1/(1-p) Multiply, or the mask one)."""
    frontier = _consumers(source)
    while frontier:
        node = frontier.pop()
        if node.get_type_name() in ("GreaterEqual", "Greater", "Convert", "Select"):
            frontier.extend(_consumers(node))
            continue
        if node.get_type_name() != "Multiply":
            break
        if any(i.get_source_output().get_node().get_type_name() == "Constant" for i in node.inputs()):
            frontier.extend(_consumers(node))  # mask * 1/(1-p) before x
            continue
        last = node
        after = _consumers(node)
        if len(after) == 1 and after[0].get_type_name() == "Multiply":
            if any(i.get_source_output().get_node().get_type_name() == "Constant" for i in after[0].inputs()):
                last = after[0]
        return node, last
    raise ValueError(f"no mask Multiply after {source.get_friendly_name()}")


def _random_sources(model: Any) -> list[Any]:
    return [op for op in model.get_ordered_ops() if op.get_type_name() == scopes.OV_RANDOM]


def dropout_removed(mc_suffix: Any) -> Any:
    """A copy of an MC suffix with every dropout bypassed (x instead of x * mask / (1-p)):
    the deterministic graph with exactly the MC graph's quantization."""
    model = mc_suffix.clone()
    for source in _random_sources(model):
        mask_mul, last = _mask_multiplies(source)
        x = _mask_data_input(mask_mul)
        for target in list(last.output(0).get_target_inputs()):
            target.replace_source_output(x)
    model.validate_nodes_and_infer_types()
    return model


def _mask_data_input(mask_mul: Any) -> Any:
    """x of ``x * mask``: the input that does not lead back to a random source."""
    for i in mask_mul.inputs():
        if not _reaches_random(i.get_source_output().get_node(), depth=4):
            return i.get_source_output()
    raise ValueError(f"cannot tell x from the mask at {mask_mul.get_friendly_name()}")


def _reaches_random(node: Any, depth: int) -> bool:
    if node.get_type_name() == scopes.OV_RANDOM or scopes.is_uniform_parameter(node):
        return True
    if depth == 0 or node.get_type_name() not in ("GreaterEqual", "Greater", "Convert", "Select", "Multiply"):
        return False
    return any(_reaches_random(i.get_source_output().get_node(), depth - 1) for i in node.inputs())


def masks_as_inputs(mc_suffix: Any, fp32_masks: Any) -> Any:
    """A copy of an MC suffix whose random ops are replaced by the ``uniform_<i>`` inputs of
    ``fp32_masks`` (matched by the name of the mask Multiply they feed): the fixed-mask
    graph with exactly the MC graph's quantization. Raises ValueError when they do not match."""
    from openvino import Model, PartialShape, Type, opset8

    by_mul = {}
    for p in fp32_masks.get_parameters():
        if scopes.is_uniform_parameter(p):
            by_mul[_mask_multiplies(p)[0].get_friendly_name()] = p
    model = mc_suffix.clone()
    sources = _random_sources(model)
    if len(sources) != len(by_mul):
        raise ValueError(f"{len(sources)} random ops but {len(by_mul)} uniform inputs")
    new_params = {}
    for source in sources:
        name = _mask_multiplies(source)[0].get_friendly_name()
        if name not in by_mul:
            raise ValueError(f"mask Multiply {name!r} has no uniform input in the fixed-mask graph")
        ref = by_mul[name]
        param = opset8.parameter(
            PartialShape(ref.get_partial_shape()), Type.f32, name=ref.get_friendly_name()
        )
        param.output(0).set_names(set(ref.output(0).get_names()))
        source.output(0).replace(param.output(0))
        new_params[ref.get_friendly_name()] = param
    order = [p.get_friendly_name() for p in fp32_masks.get_parameters() if scopes.is_uniform_parameter(p)]
    features = [p for p in model.get_parameters()]
    out = Model(model.get_results(), features + [new_params[n] for n in order], model.get_friendly_name())
    out.validate_nodes_and_infer_types()
    return out
