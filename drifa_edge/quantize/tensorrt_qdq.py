"""Explicit INT8 quantization for TensorRT >= 10: Q/DQ nodes in the ONNX graph.

TensorRT builds INT8 engines from the QuantizeLinear/DequantizeLinear nodes a graph
carries (explicit quantization; 11.x has no other INT8 path). This module writes
such a graph with one of two backends:

- ``drifa``: ONNX Runtime's ``quantize_static`` with drifa-edge's settings —
  QDQ format, symmetric INT8 (zero point 0) for activations and weights, per-tensor
  activation scales amax/127 from MinMax (or percentile) calibration, per-channel
  weight scales, only the *inputs* of Conv/Gemm/MatMul quantized (no output Q/DQ,
  float biases), the MC-mask chain in ``nodes_to_exclude``;
- ``modelopt``: NVIDIA ModelOpt (``modelopt.onnx.quantization.quantize``), the same op
  types and calibration rows.

``auto`` picks ModelOpt when it imports, else ``drifa``. Either result must pass
:func:`check_qdq_placement` — the rule that matters for MC dropout: the MC-mask chain
and the sigmoid gates stay float. Both backends let one DequantizeLinear feed every
consumer of a tensor (Add, Mul, Reduce* beside the Conv); TensorRT's explicit
quantization handles that, so it is allowed (README, "TensorRT INT8: where Q/DQ may go").

Runs on a CPU with onnxruntime — except that ModelOpt creates a ``trt.Builder`` when
``tensorrt`` is importable, so on a TensorRT machine the ModelOpt backend is not CPU-only.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from drifa_edge.errors import BadInputError, ConfigError, ExportError, missing_dependency

log = logging.getLogger(__name__)

QUANTIZED_OPS = ("Conv", "Gemm", "MatMul")
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


# Ops that only move or reshape data: a gate or mask seen through them is still the gate or mask.
_PASS_THROUGH = ("Identity", "Unsqueeze", "Reshape", "Flatten", "Squeeze", "Expand")


def sigmoid_gates(graph) -> list[str]:
    """Names of the Sigmoid nodes that gate: their output (through reshapes) is a Mul operand.

    In DRIFA-Net these are the attention weights (HIFA, CLIA, MGIFA, MLIFA and the
    fused ``sigmoid(g * global + l * local)``) that multiply feature maps.
    """
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    gates = []
    for node in graph.node:
        if node.op_type != "Sigmoid":
            continue
        frontier, seen = list(consumers.get(node.output[0], [])), 0
        while frontier and seen < 64:
            c, seen = frontier.pop(), seen + 1
            if c.op_type == "Mul":
                gates.append(node.name)
                break
            if c.op_type in _PASS_THROUGH or c.op_type in ("QuantizeLinear", "DequantizeLinear"):
                frontier.extend(consumers.get(c.output[0], []))  # a gate stays a gate through Q/DQ
    return gates


def check_qdq_placement(model, op_types: Sequence[str] = QUANTIZED_OPS) -> list[str]:
    """Problems with a Q/DQ graph for drifa-edge; an empty list means it is fine.

    The rule (README, "TensorRT INT8: where Q/DQ may go"):

    1. zero points are 0 (TensorRT's INT8 is symmetric);
    2. the MC-mask chain stays float: no node of it (random op, compare, cast, mask
       Mul, the 1/(1-p) Mul) reads a dequantized tensor, and no QuantizeLinear reads
       a mask (the output of the random op, the compare or the cast);
    3. the sigmoid gates stay float: a gating Sigmoid (:func:`sigmoid_gates`) reads
       no dequantized tensor, and no Mul reads a gate through Q/DQ.

    A DequantizeLinear whose output also feeds Add, Mul, Reduce* or pooling is
    allowed: TensorRT's explicit quantization propagates DQ forward through such
    ops and fuses quantizable element-wise ops with their Q/DQ, and ModelOpt and
    ONNX Runtime's QDQ quantizer both share one DQ between all consumers of a
    tensor. ``op_types`` only sizes the report (kept for callers).
    """
    from drifa_edge.quantize.scopes import ONNX_RANDOM, onnx_mask_nodes

    onnx = _onnx()
    graph = model.graph
    problems: list[str] = []
    inits = {t.name: t for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    dq_source: dict[str, str] = {}  # DQ output -> the float tensor its Q read ("" for a weight)
    for n in graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zp = n.input[2] if len(n.input) > 2 else ""
            if zp in inits and np.any(onnx.numpy_helper.to_array(inits[zp]) != 0):
                problems.append(
                    f"{n.op_type} {n.name!r}: zero point is not 0 (TensorRT needs symmetric INT8)"
                )
        if n.op_type == "DequantizeLinear":
            q = producer.get(n.input[0])
            dq_source[n.output[0]] = q.input[0] if q is not None and q.op_type == "QuantizeLinear" else ""
    mask_nodes = set(onnx_mask_nodes(graph))
    mask_tensors = {
        o
        for n in graph.node
        if n.name in mask_nodes and (n.op_type in ONNX_RANDOM or n.op_type != "Mul")
        for o in n.output
    }
    for n in graph.node:
        if n.name in mask_nodes and any(i in dq_source for i in n.input):
            problems.append(f"MC mask node {n.op_type} {n.name!r} reads a dequantized tensor")
        if n.op_type == "QuantizeLinear" and n.input[0] in mask_tensors:
            problems.append(f"QuantizeLinear {n.name!r} quantizes an MC mask ({n.input[0]!r})")
    gates = set(sigmoid_gates(graph))
    gate_outputs = {o for n in graph.node if n.name in gates for o in n.output}
    for n in graph.node:
        if n.name in gates and any(i in dq_source for i in n.input):
            problems.append(f"sigmoid gate {n.name!r} reads a dequantized tensor")
        if n.op_type == "Mul":
            for i in n.input:
                if _through_pass(i, producer, dq_source) in gate_outputs:
                    problems.append(f"Mul {n.name!r} reads the sigmoid gate {i!r} through Q/DQ")
    return problems


def _through_pass(tensor: str, producer: dict, dq_source: dict) -> str | None:
    """The float tensor behind ``tensor`` when it is a DQ output (through reshapes), else None."""
    for _ in range(16):
        if tensor in dq_source:
            return dq_source[tensor]
        node = producer.get(tensor)
        if node is None or node.op_type not in _PASS_THROUGH:
            return None
        tensor = node.input[0]
    return None


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
    removed = True
    try:
        if backend == "modelopt":
            _quantize_modelopt(onnx_in, onnx_out, feeds, config)
        else:
            _quantize_ort(onnx_in, onnx_out, feeds, config)
        qmodel = onnx.load(str(onnx_out))
        problems = check_qdq_placement(qmodel, config.op_types)
        if problems:
            raise ExportError(
                f"{onnx_out.name}: Q/DQ placement from {backend} breaks drifa-edge's rule "
                f"({len(problems)} problems): "
                + "; ".join(problems[:3])
                + ("; retry with --qdq-backend drifa" if backend == "modelopt" else "")
            )
        onnx.checker.check_model(qmodel)
        removed = False
    finally:
        if removed:  # a refused or failed graph is not left behind
            onnx_out.unlink(missing_ok=True)
    report = {
        "backend": backend,
        "method": ("ort:" if backend == "drifa" else "modelopt:") + config.method,
        "batches": len(feeds),
        "rows": int(sum(len(next(iter(f.values()))) for f in feeds)),
        **qdq_summary(qmodel, config.op_types),
        "shared_dq_inputs": shared_dequantized(qmodel, config.op_types),
    }
    scales = activation_scales(qmodel)
    if scales:
        report["activation_scale_range"] = [min(scales.values()), max(scales.values())]
    return report


class _Feeds:
    """onnxruntime's CalibrationDataReader over a list of feeds."""

    def __init__(self, feeds: Sequence[dict[str, np.ndarray]]) -> None:
        self.feeds = list(feeds)
        self.position = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.position >= len(self.feeds):
            return None
        self.position += 1
        return self.feeds[self.position - 1]

    def rewind(self) -> None:
        self.position = 0


def _quantize_ort(onnx_in: Path, onnx_out: Path, feeds: Sequence[dict], config: QDQConfig) -> None:
    """The ``drifa`` backend: onnxruntime's ``quantize_static`` with TensorRT's Q/DQ conventions.

    Calibration runs on a copy whose random nodes are seeded (reproducible ranges);
    the written graph gets its random nodes back unseeded, so MC masks still differ
    per call. Activation scales are floored at the smallest normal float16
    (``MIN_ACTIVATION_SCALE``): a tensor that is always 0 would otherwise get a
    scale that underflows where TensorRT keeps scales in half precision.
    """
    onnx = _onnx()
    try:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    except ImportError as e:
        raise missing_dependency("onnxruntime", "onnx") from e
    from drifa_edge.quantize.scopes import onnx_mask_nodes

    model = onnx.load(str(onnx_in))
    if _opset(model) < MIN_OPSET:
        raise ExportError(
            f"per-channel Q/DQ needs ONNX opset >= {MIN_OPSET}, {onnx_in.name} has opset {_opset(model)}; "
            "re-export the ONNX graphs with a newer opset"
        )
    original = {
        n.name: list(n.attribute)
        for n in model.graph.node
        if n.op_type in ("RandomUniformLike", "RandomUniform")
    }
    seed_random_nodes(model)
    method = CalibrationMethod.MinMax if config.method == "max" else CalibrationMethod.Percentile
    extra = {
        "ActivationSymmetric": True,
        "WeightSymmetric": True,
        "QuantizeBias": False,  # TensorRT takes float biases; int32 bias DQ is not a TensorRT Q/DQ type
        "OpTypesToExcludeOutputQuantization": list(config.op_types),  # inputs only: gates stay float
        "CalibPercentile": config.percentile,
    }
    onnx_out.parent.mkdir(parents=True, exist_ok=True)
    tmp = onnx_out.with_suffix(".tmp")
    quantize_static(
        model,
        str(tmp),
        _Feeds(feeds),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=list(config.op_types),
        nodes_to_exclude=onnx_mask_nodes(model.graph),
        calibrate_method=method,
        extra_options=extra,
    )
    qmodel = onnx.load(str(tmp))
    dedicate_dequantized(qmodel, config.op_types)
    for node in qmodel.graph.node:
        if node.name in original:
            del node.attribute[:]
            node.attribute.extend(original[node.name])
    inits = {t.name: t for t in qmodel.graph.initializer}
    for name in set(activation_scales(qmodel)):
        value = onnx.numpy_helper.to_array(inits[name])
        if float(value) < MIN_ACTIVATION_SCALE:
            inits[name].CopyFrom(
                onnx.numpy_helper.from_array(np.array(MIN_ACTIVATION_SCALE, value.dtype), name)
            )
    onnx.save(qmodel, str(tmp))
    tmp.replace(onnx_out)


def dedicate_dequantized(model, op_types: Sequence[str] = QUANTIZED_OPS) -> int:
    """Rewire every consumer outside ``op_types`` from a DQ output back to the float tensor.

    onnxruntime (like ModelOpt) lets one DequantizeLinear feed all consumers of a
    tensor, so residual Adds, gate Muls and pooling read the quantized value too.
    On the tiny test model that moved prefix features by 16 % of their range
    against 1.2 % with only Conv/Gemm/MatMul reading Q/DQ (measured on CPU; the
    README has the numbers). drifa-edge quantizes where the matmul is and nowhere
    else. In place; returns how many inputs were rewired.
    """
    producer = {o: n for n in model.graph.node for o in n.output}
    source = {}
    for n in model.graph.node:
        q = producer.get(n.input[0]) if n.op_type == "DequantizeLinear" else None
        if q is not None and q.op_type == "QuantizeLinear":
            source[n.output[0]] = q.input[0]
    count = 0
    for n in model.graph.node:
        if n.op_type in op_types or n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for k, name in enumerate(n.input):
            if name in source:
                n.input[k] = source[name]
                count += 1
    return count


def shared_dequantized(model, op_types: Sequence[str] = QUANTIZED_OPS) -> int:
    """How many inputs of nodes outside ``op_types`` read a DQ output (0 after :func:`dedicate_dequantized`)."""
    dq = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    return sum(
        1
        for n in model.graph.node
        if n.op_type not in op_types and n.op_type not in ("QuantizeLinear", "DequantizeLinear")
        for i in n.input
        if i in dq
    )


def activation_scales(model) -> dict[str, float]:
    """Scale initializer -> value of every per-tensor QuantizeLinear (the activations)."""
    onnx = _onnx()
    inits = {t.name: t for t in model.graph.initializer}
    out = {}
    for n in model.graph.node:
        if n.op_type == "QuantizeLinear" and len(n.input) > 1 and n.input[1] in inits:
            value = onnx.numpy_helper.to_array(inits[n.input[1]])
            if value.ndim == 0:
                out[n.input[1]] = float(value)
    return out


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
        raise missing_dependency("nvidia-modelopt", "modelopt") from e

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
