"""Explicit INT8 quantization for TensorRT >= 10: Q/DQ nodes in the ONNX graph.

TensorRT 10 builds INT8 engines from QuantizeLinear/DequantizeLinear pairs that
the graph carries (explicit quantization); the implicit calibrator path is
deprecated. This module writes such a graph:

- with NVIDIA ModelOpt (``modelopt.onnx.quantization.quantize``) when it is
  installed and ``backend`` allows it, restricted to the same op types; or
- with its own placement (``backend="drifa"``): symmetric INT8, zero point 0,
  per-tensor activation scales ``amax / 127`` from calibration, per-channel
  weight scales on the output-channel axis, on the inputs of Conv, Gemm and
  MatMul only.

The MC dropout subgraph (RandomUniformLike -> GreaterOrEqual -> Cast -> mask
Mul), the sigmoid attention arithmetic and every other op stay in float: a
quantized mask or a quantized attention gate would change the model's
uncertainty, not only its accuracy. :func:`check_qdq_placement` verifies that
on any Q/DQ graph, ours or ModelOpt's.

Everything here runs on a CPU with onnxruntime; no GPU or TensorRT is needed.
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from drifa_edge.errors import BadInputError, ConfigError, ExportError, missing_dependency

log = logging.getLogger(__name__)

QUANTIZED_OPS = ("Conv", "Gemm", "MatMul")
# Ops that must never read a dequantized tensor (the MC mask chain).
MASK_OPS = ("RandomUniformLike", "RandomUniform", "GreaterOrEqual", "Cast")
INT8_MAX = 127.0
# Smallest activation scale: the smallest normal float16. A tensor that is always 0
# (MGIFA's min-pool after ReLU and dropout is one) would otherwise get a scale that
# underflows if TensorRT keeps scales in half precision.
MIN_ACTIVATION_SCALE = 2.0**-14
MIN_OPSET = 13  # per-axis QuantizeLinear/DequantizeLinear


@dataclass(frozen=True)
class QDQConfig:
    """How to place and calibrate Q/DQ nodes for a TensorRT INT8 build."""

    backend: str = "auto"  # auto (ModelOpt when installed) | modelopt | drifa
    method: str = "max"  # max | percentile (of |x|, averaged over batches)
    percentile: float = 99.99
    op_types: tuple[str, ...] = QUANTIZED_OPS
    subset: int = 300  # calibration cases
    masks_per_case: int = 4  # suffix: each case's features are tiled this many times (fresh masks)

    def __post_init__(self) -> None:
        if self.backend not in ("auto", "modelopt", "drifa"):
            raise ConfigError(f"Q/DQ backend must be auto, modelopt or drifa, got {self.backend!r}")
        if self.method not in ("max", "percentile"):
            raise ConfigError(f"calibration method must be 'max' or 'percentile', got {self.method!r}")
        if not 50.0 < self.percentile <= 100.0:
            raise ConfigError(f"percentile must be in (50, 100], got {self.percentile}")
        unknown = set(self.op_types) - set(QUANTIZED_OPS)
        if not self.op_types or unknown:
            raise ConfigError(f"op_types must be a non-empty subset of {QUANTIZED_OPS}, got {self.op_types}")
        if self.subset < 1 or self.masks_per_case < 1:
            raise ConfigError(
                f"subset and masks_per_case must be >= 1, got {self.subset}, {self.masks_per_case}"
            )


# --------------------------------------------------------------------------- calibration batches


def batch_sizes(total: int, rows: tuple[int, int, int], exact: bool = False) -> list[int]:
    """Split ``total`` rows into batch sizes within ``rows = (min, opt, max)``.

    Batches have ``opt`` rows; a short last batch is merged into the previous one
    when that stays <= max, otherwise it is padded up to ``min`` (the caller
    repeats rows). With ``exact`` every batch has exactly ``opt`` rows (the last
    one padded), for tools that need one fixed calibration shape.
    Returned sizes include padding; their sum may exceed ``total``.
    """
    lo, opt, hi = rows
    if not 1 <= lo <= opt <= hi:
        raise ConfigError(f"row range must satisfy 1 <= min <= opt <= max, got {rows}")
    if total < 1:
        raise BadInputError("calibration needs at least one case, got none")
    full, rest = divmod(total, opt)
    sizes = [opt] * full
    if rest:
        if exact:
            sizes.append(opt)
        elif sizes and sizes[-1] + rest <= hi:
            sizes[-1] += rest
        else:
            sizes.append(max(rest, lo))
    return sizes


def evenly_spaced(n: int, subset: int | None) -> np.ndarray:
    """Indices of at most ``subset`` of ``n`` cases, spread over the whole set
    (a class-sorted folder then still contributes every class)."""
    if subset is None or subset >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, subset).round().astype(np.int64))


def calibration_batches(
    arrays: Sequence[np.ndarray],
    rows: tuple[int, int, int],
    subset: int | None = None,
    exact: bool = False,
) -> Iterator[list[np.ndarray]]:
    """Yield aligned batches (one array per input) sized within the profile's row range.

    ``arrays`` hold one input each (same length N). At most ``subset`` rows are
    used, evenly spaced. Padding repeats the batch's own rows cyclically, which
    leaves max/percentile statistics of a batch unchanged in range.
    """
    if not arrays:
        raise BadInputError("calibration needs at least one input array")
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise BadInputError(f"calibration arrays differ in length: {[len(a) for a in arrays]}")
    idx = evenly_spaced(n, subset)
    start = 0
    for size in batch_sizes(len(idx), rows, exact=exact):
        take = idx[start : start + size]
        start += len(take)
        if len(take) < size:  # pad by cycling over the rows actually taken
            take = np.resize(take, size)
        yield [np.ascontiguousarray(a[take], dtype=np.float32) for a in arrays]


def tile_cases(features: Sequence[np.ndarray], reps: int) -> list[np.ndarray]:
    """(N, ...) -> (N*reps, ...), each case's copies adjacent (as the engine tiles T)."""
    return [np.repeat(f, reps, axis=0) for f in features]


def prefix_features(
    prefix_onnx: str | Path,
    images: Sequence[np.ndarray],
    rows: tuple[int, int, int],
    input_names: Sequence[str],
    output_names: Sequence[str],
) -> list[np.ndarray]:
    """FP32 prefix features of calibration images, by onnxruntime on the CPU."""
    sess = _ort_session(Path(prefix_onnx).read_bytes())
    n = len(images[0])
    outs: list[list[np.ndarray]] = [[] for _ in output_names]
    done = 0
    for batch in calibration_batches(images, rows):
        got = sess.run(list(output_names), dict(zip(input_names, batch, strict=True)))
        keep = min(len(batch[0]), n - done)  # drop padded rows
        for k, o in enumerate(got):
            outs[k].append(o[:keep])
        done += keep
    return [np.concatenate(o) for o in outs]


# --------------------------------------------------------------------------- graph helpers


def _ort_session(model_bytes: bytes):
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise missing_dependency("onnxruntime", "onnx") from e
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


def _onnx():
    try:
        import onnx
    except ImportError as e:
        raise missing_dependency("onnx", "onnx") from e
    return onnx


def _opset(model) -> int:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


def seed_random_nodes(model, base: int = 1) -> int:
    """Give every RandomUniform(Like) node a fixed ``seed`` (node i -> base + i), in place.

    onnxruntime then draws the same masks in two sessions of two graphs that share
    these nodes: calibration is reproducible, and a Q/DQ graph can be compared with
    its FP32 original under identical masks. Returns the number of nodes seeded.
    """
    onnx = _onnx()
    count = 0
    for node in model.graph.node:
        if node.op_type in ("RandomUniformLike", "RandomUniform"):
            for a in list(node.attribute):
                if a.name == "seed":
                    node.attribute.remove(a)
            node.attribute.append(onnx.helper.make_attribute("seed", float(base + count)))
            count += 1
    return count


def _weight_source(name: str, inits: dict[str, Any], producers: dict[str, Any]) -> str | None:
    """The initializer behind ``name``, following Identity nodes; None for an activation."""
    seen = 0
    while name not in inits:
        node = producers.get(name)
        if node is None or node.op_type != "Identity" or seen > 16:
            return None
        name, seen = node.input[0], seen + 1
    return name


def _weight_axis(node, input_index: int, rank: int) -> int:
    """Output-channel axis of a weight: Conv (K, C, kh, kw) -> 0; Gemm B with
    transB=1 (N, K) -> 0; Gemm B without transB and MatMul B (K, N) -> last."""
    if node.op_type == "Conv":
        return 0
    if node.op_type == "Gemm":
        attrs = {a.name: a.i for a in node.attribute}
        trans = attrs.get("transB" if input_index == 1 else "transA", 0)
        if input_index == 1:
            return 0 if trans else 1
        return 1 if trans else 0  # A as a weight (rare): its row axis
    return rank - 1


def quantization_sites(model, op_types: Sequence[str] = QUANTIZED_OPS) -> tuple[list[str], list[tuple]]:
    """Activation tensors to quantize per-tensor, and (node index, input index,
    initializer, axis) weights to quantize per-channel, for Conv/Gemm/MatMul."""
    onnx = _onnx()
    inits = {t.name: t for t in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    activations: list[str] = []
    weights: list[tuple] = []
    for i, node in enumerate(model.graph.node):
        if node.op_type not in op_types:
            continue
        data_inputs = node.input[:2]  # Conv X, W / Gemm A, B / MatMul A, B; never the bias
        for k, name in enumerate(data_inputs):
            if not name:
                continue
            src = _weight_source(name, inits, producers)
            if src is None:
                if name not in activations:
                    activations.append(name)
            else:
                rank = len(onnx.numpy_helper.to_array(inits[src]).shape)
                if rank >= 2:
                    weights.append((i, k, src, _weight_axis(node, k, rank)))
    return activations, weights


# --------------------------------------------------------------------------- calibration


def collect_amax(
    model,
    tensors: Sequence[str],
    feeds: Iterable[dict[str, np.ndarray]],
    method: str = "max",
    percentile: float = 99.99,
) -> dict[str, float]:
    """Per-tensor activation range ``amax`` of ``tensors`` over calibration ``feeds``.

    ``max``: the largest |x| seen. ``percentile``: the mean over batches of each
    batch's ``percentile`` of |x| (clips rare outliers). The random nodes are
    seeded first, so the same feeds give the same ranges.
    """
    onnx = _onnx()
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    seed_random_nodes(probe)
    graph_inputs = {i.name for i in probe.graph.input}
    existing = {o.name for o in probe.graph.output}
    inner = [t for t in tensors if t not in graph_inputs]
    for t in inner:
        if t not in existing:
            probe.graph.output.append(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None))
    sess = _ort_session(probe.SerializeToString())
    stats: dict[str, list[float]] = {t: [] for t in tensors}
    batches = 0
    for feed in feeds:
        values = dict(zip(inner, sess.run(inner, feed), strict=True)) if inner else {}
        values.update({t: feed[t] for t in tensors if t in graph_inputs})
        for t in tensors:
            a = np.abs(np.asarray(values[t], dtype=np.float32))
            stats[t].append(float(a.max()) if method == "max" else float(np.percentile(a, percentile)))
        batches += 1
    if batches == 0:
        raise BadInputError("calibration produced no batch; pass at least one calibration case")
    reduce = max if method == "max" else (lambda v: float(np.mean(v)))
    amax = {t: float(reduce(v)) for t, v in stats.items()}
    bad = [t for t, v in amax.items() if not math.isfinite(v)]
    if bad:
        raise ExportError(f"calibration gave non-finite ranges for {bad[:3]}; check the calibration images")
    return amax


# --------------------------------------------------------------------------- placement


def insert_qdq(model, amax: dict[str, float], op_types: Sequence[str] = QUANTIZED_OPS):
    """Return a copy of ``model`` with Q/DQ on the inputs of ``op_types`` nodes.

    Activations: QuantizeLinear -> DequantizeLinear, per tensor, scale amax/127,
    int8 zero point 0, shared by every quantized consumer of that tensor; other
    consumers (the MC mask chain, sigmoids, adds) keep reading the float tensor.
    Weights: stored as int8 initializers + DequantizeLinear with per-channel
    scales max|W|/127 on the output-channel axis.
    """
    onnx = _onnx()
    from onnx import helper, numpy_helper

    if _opset(model) < MIN_OPSET:
        raise ExportError(
            f"per-channel Q/DQ needs ONNX opset >= {MIN_OPSET}, the graph has opset {_opset(model)}; "
            "re-export the ONNX graphs with a newer opset"
        )
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    activations, weights = quantization_sites(out, op_types)
    missing = [t for t in activations if t not in amax]
    if missing:
        raise ExportError(f"no calibration range for activation(s) {missing[:3]}; run collect_amax first")
    inits = {t.name: t for t in graph.initializer}
    new_inits: list = []
    rewired: dict[int, dict[int, str]] = {}  # node index -> {input index: new tensor name}
    pre_nodes: dict[int, list] = {}  # node index -> Q/DQ nodes to emit just before it
    emitted: dict[str, str] = {}

    def first_consumer(tensor: str) -> int:
        return min(i for i, n in enumerate(graph.node) if n.op_type in op_types and tensor in n.input[:2])

    for t in activations:
        scale = max(float(amax[t]) / INT8_MAX, MIN_ACTIVATION_SCALE)
        s_name, z_name = f"{t}__qdq_scale", f"{t}__qdq_zero"
        new_inits += [
            numpy_helper.from_array(np.array(scale, dtype=np.float32), s_name),
            numpy_helper.from_array(np.array(0, dtype=np.int8), z_name),
        ]
        q, dq = f"{t}__q", f"{t}__dq"
        pre_nodes.setdefault(first_consumer(t), []).extend(
            [
                helper.make_node("QuantizeLinear", [t, s_name, z_name], [q], name=f"{t}__QuantizeLinear"),
                helper.make_node(
                    "DequantizeLinear", [q, s_name, z_name], [dq], name=f"{t}__DequantizeLinear"
                ),
            ]
        )
        emitted[t] = dq
    for i, node in enumerate(graph.node):
        if node.op_type in op_types:
            for k in range(min(2, len(node.input))):
                if node.input[k] in emitted:
                    rewired.setdefault(i, {})[k] = emitted[node.input[k]]
    done_weights: dict[tuple[str, int], str] = {}
    for i, k, src, axis in weights:
        key = (src, axis)
        if key not in done_weights:
            w = numpy_helper.to_array(inits[src]).astype(np.float32)
            red = tuple(d for d in range(w.ndim) if d != axis)
            wmax = np.abs(w).max(axis=red)
            scale = np.where(wmax > 0, wmax / INT8_MAX, 1.0).astype(np.float32)
            shape = [1] * w.ndim
            shape[axis] = -1
            q = np.clip(np.rint(w / scale.reshape(shape)), -INT8_MAX, INT8_MAX).astype(np.int8)
            base = f"{src}__axis{axis}"
            new_inits += [
                numpy_helper.from_array(q, f"{base}__int8"),
                numpy_helper.from_array(scale, f"{base}__qdq_scale"),
                numpy_helper.from_array(np.zeros(len(scale), dtype=np.int8), f"{base}__qdq_zero"),
            ]
            dq = helper.make_node(
                "DequantizeLinear",
                [f"{base}__int8", f"{base}__qdq_scale", f"{base}__qdq_zero"],
                [f"{base}__dq"],
                name=f"{base}__DequantizeLinear",
                axis=axis,
            )
            pre_nodes.setdefault(i, []).append(dq)
            done_weights[key] = f"{base}__dq"
        rewired.setdefault(i, {})[k] = done_weights[key]
    nodes = []
    for i, node in enumerate(graph.node):
        nodes.extend(pre_nodes.get(i, []))
        for k, name in rewired.get(i, {}).items():
            node.input[k] = name
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(new_inits)
    _drop_unused_initializers(graph)
    return out


def _drop_unused_initializers(graph) -> None:
    used = {name for n in graph.node for name in n.input} | {o.name for o in graph.output}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def check_qdq_placement(model, op_types: Sequence[str] = QUANTIZED_OPS) -> list[str]:
    """Problems with a Q/DQ graph for drifa-edge; an empty list means it is fine.

    Checks: zero points are 0 (TensorRT's symmetric INT8); a DequantizeLinear only
    feeds ``op_types`` nodes; no node of the MC mask chain and no mask Mul reads a
    dequantized tensor; the mask chain keeps its original node count.
    """
    onnx = _onnx()
    problems: list[str] = []
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    consumers: dict[str, list] = {}
    for n in model.graph.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    dq_outputs = set()
    for n in model.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zp = n.input[2] if len(n.input) > 2 else ""
            if zp and zp in inits and np.any(inits[zp] != 0):
                problems.append(
                    f"{n.op_type} {n.name!r}: zero point is not 0 (TensorRT needs symmetric INT8)"
                )
        if n.op_type == "DequantizeLinear":
            dq_outputs.add(n.output[0])
            bad = sorted({c.op_type for c in consumers.get(n.output[0], []) if c.op_type not in op_types})
            if bad:
                problems.append(f"DequantizeLinear {n.name!r} feeds {bad}, expected only {list(op_types)}")
    mask_casts = set()
    for n in model.graph.node:
        if n.op_type in MASK_OPS and any(i in dq_outputs for i in n.input):
            problems.append(f"MC mask node {n.op_type} {n.name!r} reads a dequantized tensor")
        if n.op_type == "Cast":
            mask_casts.add(n.output[0])
    for n in model.graph.node:
        if n.op_type == "Mul" and any(i in mask_casts for i in n.input):
            if any(i in dq_outputs for i in n.input):
                problems.append(f"mask Mul {n.name!r} reads a dequantized tensor")
    return problems


def qdq_summary(model, op_types: Sequence[str] = QUANTIZED_OPS) -> dict[str, int]:
    """Counts for the report: quantizable nodes and those whose inputs are both dequantized."""
    dq = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    nodes = [n for n in model.graph.node if n.op_type in op_types]
    full = sum(1 for n in nodes if all(i in dq for i in n.input[:2] if i))
    return {
        "quantizable_nodes": len(nodes),
        "fully_quantized_nodes": full,
        "quantize_linear": sum(n.op_type == "QuantizeLinear" for n in model.graph.node),
        "dequantize_linear": len(dq),
        "random_nodes": sum(n.op_type in ("RandomUniformLike", "RandomUniform") for n in model.graph.node),
    }


# --------------------------------------------------------------------------- entry point


def modelopt_available() -> bool:
    try:
        import modelopt.onnx.quantization  # noqa: F401
    except Exception:  # ImportError or a broken install
        return False
    return True


def quantize_for_tensorrt(
    onnx_in: str | Path,
    onnx_out: str | Path,
    feeds: Sequence[dict[str, np.ndarray]],
    config: QDQConfig | None = None,
) -> dict[str, Any]:
    """Write a Q/DQ copy of ``onnx_in`` for a TensorRT INT8 build; return a report.

    ``feeds`` are calibration batches (input name -> array), already sized within
    the engine's optimization profile (see :func:`calibration_batches`).
    """
    config = config or QDQConfig()
    onnx = _onnx()
    onnx_in, onnx_out = Path(onnx_in), Path(onnx_out)
    if not feeds:
        raise BadInputError("INT8 calibration needs at least one batch; pass calibration images")
    backend = config.backend
    if backend == "auto":
        backend = "modelopt" if modelopt_available() else "drifa"
    model = onnx.load(str(onnx_in))
    if backend == "modelopt":
        _quantize_modelopt(onnx_in, onnx_out, feeds, config)
        qmodel = onnx.load(str(onnx_out))
        amax = None
    else:
        activations, _ = quantization_sites(model, config.op_types)
        amax = collect_amax(model, activations, feeds, config.method, config.percentile)
        qmodel = insert_qdq(model, amax, config.op_types)
    problems = check_qdq_placement(qmodel, config.op_types)
    if problems:
        raise ExportError(
            f"{onnx_out.name}: Q/DQ placement from {backend} breaks drifa-edge's rules: "
            + "; ".join(problems[:3])
            + ("; retry with backend='drifa'" if backend == "modelopt" else "")
        )
    onnx.checker.check_model(qmodel)
    if backend != "modelopt":
        onnx_out.parent.mkdir(parents=True, exist_ok=True)
        tmp = onnx_out.with_suffix(".tmp")
        onnx.save(qmodel, str(tmp))
        tmp.replace(onnx_out)
    report = {
        "backend": backend,
        "method": config.method if backend == "drifa" else "modelopt:" + config.method,
        "batches": len(feeds),
        "rows": int(sum(len(next(iter(f.values()))) for f in feeds)),
        **qdq_summary(qmodel, config.op_types),
    }
    if amax is not None:
        report["amax_range"] = [float(min(amax.values())), float(max(amax.values()))]
    return report


def _quantize_modelopt(onnx_in: Path, onnx_out: Path, feeds: Sequence[dict], config: QDQConfig) -> None:
    """ModelOpt's ONNX PTQ with drifa-edge's op types and the same calibration rows.

    Only arguments present in the installed version are passed (its signature
    has grown across releases); the model stays FP32 outside the Q/DQ pairs so
    TensorRT's FP16 flag decides the rest.
    """
    import inspect

    try:
        from modelopt.onnx.quantization import quantize
    except ImportError as e:
        raise missing_dependency("nvidia-modelopt", "tensorrt") from e

    names = list(feeds[0])
    data = {n: np.concatenate([f[n] for f in feeds]) for n in names}
    rows = len(next(iter(feeds[0].values())))
    shapes = ",".join(f"{n}:" + "x".join(str(d) for d in (rows, *data[n].shape[1:])) for n in names)
    total = len(data[names[0]]) - len(data[names[0]]) % rows  # whole calibration steps only
    data = {n: a[:total] for n, a in data.items()}
    wanted = {
        "onnx_path": str(onnx_in),
        "quantize_mode": "int8",
        "calibration_data": data,
        "calibration_method": "max" if config.method == "max" else "entropy",
        "calibration_shapes": shapes,
        "calibration_eps": ["cpu"],
        "op_types_to_quantize": list(config.op_types),
        "output_path": str(onnx_out),
        "high_precision_dtype": "fp32",
        "log_level": "WARNING",
    }
    accepted = inspect.signature(quantize).parameters
    kwargs = {k: v for k, v in wanted.items() if k in accepted}
    onnx_out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="drifa-modelopt-") as tmp:
        # ModelOpt writes intermediate files next to its input; keep them out of the export folder.
        local = Path(tmp) / onnx_in.name
        local.write_bytes(onnx_in.read_bytes())
        kwargs["onnx_path"] = str(local)
        try:
            quantize(**kwargs)
        except Exception as e:  # ModelOpt raises plain exceptions; keep the cause
            raise ExportError(f"ModelOpt INT8 quantization of {onnx_in.name} failed: {e}") from e
    if not onnx_out.is_file():
        raise ExportError(f"ModelOpt did not write {onnx_out}")
