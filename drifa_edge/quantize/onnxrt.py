"""INT8 ONNX graphs for ONNX Runtime: ``OUT/onnx/`` -> ``OUT/onnx-int8/``.

Two tools, one flow (calibration cases, ignored-scope policy and provenance as in
:mod:`drifa_edge.quantize.nncf`):

- ``method="ort"`` (default): ONNX Runtime's own static quantization
  (``onnxruntime.quantization.quantize_static``), QDQ or QOperator format, on the
  Conv/Gemm/MatMul nodes the policy chooses, per-channel weights, U8 activations /
  S8 weights (the VNNI fast path on x86). Measured on this project's CPUs it runs
  faster than FP32 in ONNX Runtime, while NNCF's QDQ graph ran *slower* than FP32
  there (Q/DQ pairs on conv inputs only, no integer kernels picked).
- ``method="nncf"``: ``nncf.quantize`` on the ``onnx.ModelProto``.

The MC-mask chain (RandomUniformLike -> GreaterOrEqual -> Cast -> mask Mul -> scale
Mul) is excluded in both, so the random ops survive and draw fresh masks per call.
The card embedded in each graph's ``metadata_props`` is carried over.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from drifa_edge.artifact import layout
from drifa_edge.artifact.ensemble import resolve_members
from drifa_edge.errors import ConfigError, ExportError, missing_dependency
from drifa_edge.progress import stage, step
from drifa_edge.quantize import build, ir, scopes
from drifa_edge.quantize.calibration_set import CalibrationSet, load_calibration_set
from drifa_edge.quantize.config import QuantizeConfig

log = logging.getLogger(__name__)

SECTION = "onnx"  # card.export["int8"][SECTION]


def _onnx():
    try:
        import onnx
        import onnxruntime
    except ImportError as e:
        raise missing_dependency(e.name or "onnxruntime", "onnx") from e
    return onnx, onnxruntime


def _fp32_files() -> list[str]:
    return [layout.onnx_file(g, "fp32") for g in layout.GRAPHS]


def _int8_files() -> list[str]:
    return [layout.onnx_file(g, "int8") for g in layout.GRAPHS]


class _Reader:
    """onnxruntime.quantization.CalibrationDataReader over a list of feed dicts."""

    def __init__(self, items: list[dict[str, np.ndarray]]) -> None:
        self._items = iter(items)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._items, None)

    def rewind(self) -> None:  # not used by MinMax calibration
        raise NotImplementedError


def quantize_graph_ort(
    src: Path, dst: Path, items: list[dict[str, np.ndarray]], config: QuantizeConfig
) -> Any:
    """ORT static quantization of one ONNX file (policy-chosen nodes, mask chain excluded)."""
    onnx, _ = _onnx()
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fmt = QuantFormat.QDQ if config.ort_format == "qdq" else QuantFormat.QOperator
    with tempfile.TemporaryDirectory() as tmp:  # ORT writes augmented models next to its temp files
        try:
            # shape inference + ORT's basic graph optimizations, as ORT recommends before quantizing
            quant_pre_process(str(src), str(Path(tmp) / "pre.onnx"))
            model = onnx.load(str(Path(tmp) / "pre.onnx"))
            chosen = _ort_nodes(model, config)
            quantize_static(
                model,
                str(dst),
                _Reader(items),
                quant_format=fmt,
                op_types_to_quantize=["Conv", "Gemm", "MatMul"] if chosen is not None else None,
                per_channel=config.per_channel,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_quantize=chosen,
                nodes_to_exclude=scopes.onnx_mask_nodes(model.graph),
                calibrate_method=CalibrationMethod.MinMax,
                extra_options={"CalibMovingAverage": config.range_estimator == "mean-minmax"},
                calibration_cache_path=Path(tmp) / "calibration",
            )
        except Exception as e:
            raise ExportError(f"onnxruntime could not quantize {src}: {e}") from e
    out = onnx.load(str(dst))
    _copy_metadata(model, out)
    onnx.save(out, str(dst))
    return out


def _ort_nodes(model: Any, config: QuantizeConfig) -> list[str] | None:
    """Nodes ORT may quantize under the policy; None = ORT's own choice of op types."""
    if config.scope == "all":
        return None
    ignored = set(scopes.onnx_ignored_names(model, config.scope, config.keep_float))
    return [
        n.name for n in model.graph.node if n.name not in ignored and n.op_type in ("Conv", "Gemm", "MatMul")
    ]


def quantize_graph_nncf(
    src: Path, dst: Path, items: list[dict[str, np.ndarray]], config: QuantizeConfig
) -> Any:
    """NNCF post-training quantization of one ONNX file (QDQ pairs)."""
    onnx, _ = _onnx()
    from drifa_edge.quantize.nncf_api import nncf_arguments, nncf_imports

    _, nncf = nncf_imports()
    model = onnx.load(str(src))
    ignored = scopes.onnx_ignored_names(model, config.scope, config.keep_float)
    try:
        out = nncf.quantize(model, nncf.Dataset(items), **nncf_arguments(config, ignored, len(items)))
    except Exception as e:
        raise ExportError(f"NNCF could not quantize {src}: {e}") from e
    _copy_metadata(model, out)
    onnx.save(out, str(dst))
    return out


def _copy_metadata(src: Any, dst: Any) -> None:
    """Carry the embedded card (and any other metadata_props) into the quantized graph."""
    present = {p.key for p in dst.metadata_props}
    for prop in src.metadata_props:
        if prop.key not in present:
            dst.metadata_props.add(key=prop.key, value=prop.value)


def _ort_run(session: Any, feeds: dict[str, np.ndarray], outputs: Sequence[str]) -> list[np.ndarray]:
    return [np.asarray(x, dtype=np.float32) for x in session.run(list(outputs), feeds)]


def _features(root: Path, card: Any, images: Sequence[np.ndarray], batch: int = 16) -> list[np.ndarray]:
    _, ort = _onnx()
    session = ort.InferenceSession(str(root / layout.onnx_file("prefix")), providers=["CPUExecutionProvider"])
    tasks = card.task_names
    parts: list[list[np.ndarray]] = [[] for _ in tasks]
    for start in range(0, images[0].shape[0], batch):
        feeds = {layout.image_name(t): x[start : start + batch] for t, x in zip(tasks, images, strict=True)}
        for k, f in enumerate(_ort_run(session, feeds, [layout.feature_name(t) for t in tasks])):
            parts[k].append(f)
    return [np.concatenate(p) for p in parts]


def _uniform_shapes(model: Any) -> dict[str, tuple[int, ...]]:
    return {
        i.name: tuple(d.dim_value for d in i.type.tensor_type.shape.dim[1:])
        for i in model.graph.input
        if i.name.startswith("uniform_")
    }


def quantize_onnx_member(root: Path, calib: CalibrationSet, config: QuantizeConfig) -> dict[str, Any]:
    """Build (or reuse) ``root/onnx-int8`` of one model; returns its card section."""
    onnx, _ = _onnx()
    card = layout.verified_card(root, _fp32_files())
    key = build.build_key(card, calib, config, _fp32_files())  # the ONNX graphs it is made from
    if build.reusable(root, card, SECTION, key, _int8_files()):
        return {**card.export["int8"][SECTION], "reused": True}
    quantize = quantize_graph_ort if config.method == "ort" else quantize_graph_nncf
    started = time.perf_counter()
    stage(f"ONNX Runtime INT8: features of {calib.cases} calibration cases ({root})")
    feats = _features(root, card, calib.images)
    rows, seed = config.rows_per_case, config.seed
    masks_model = onnx.load(str(root / layout.onnx_file("suffix_masks")), load_external_data=False)
    items = {
        "prefix": ir.image_items(card, calib.images),
        "suffix": ir.suffix_items(card, feats, rows, True, seed),
        "suffix_det": ir.suffix_items(card, feats, rows, False, seed),
        "suffix_masks": ir.suffix_items(card, feats, rows, True, seed, _uniform_shapes(masks_model)),
    }
    (root / layout.onnx_folder("int8")).mkdir(parents=True, exist_ok=True)
    seconds, quantized = {}, {}
    for k, g in enumerate(layout.GRAPHS, 1):
        step("ONNX Runtime INT8 calibration, graph", k, len(layout.GRAPHS), g)
        t = time.perf_counter()
        src, dst = root / layout.onnx_file(g, "fp32"), root / layout.onnx_file(g, "int8")
        if g == "prefix" and not config.quantize_prefix:  # runs once per case: stays FP32
            shutil.copyfile(src, dst)
            out = onnx.load(str(dst))
        else:
            out = quantize(src, dst, items[g], config)
        seconds[g] = round(time.perf_counter() - t, 2)
        quantized[g] = sum(
            n.op_type in ("QuantizeLinear", "QLinearConv", "QLinearMatMul") for n in out.graph.node
        )
    section = {
        "key": key,
        "config": config.to_dict(),
        "calibration": calib.provenance(config.seed, config.split, config.preset),
        "seconds": {**seconds, "total": round(time.perf_counter() - started, 2)},
        "quantize_nodes": quantized,
        "sizes_bytes": {rel: (root / rel).stat().st_size for rel in _int8_files()},
    }
    return build.record(root, card, SECTION, section, _int8_files())


def quantize_onnx(
    export_dir: str | Path,
    calib_values: Sequence[str] | None,
    config: QuantizeConfig | None = None,
    calib: CalibrationSet | None = None,
) -> dict[str, Any]:
    """Write ``onnx-int8/`` beside ``onnx/`` (every member of an ensemble); returns the card
    section (``{"members": {...}}`` for an ensemble)."""
    config = config or QuantizeConfig(backend="onnx", method="ort")
    if config.backend != "onnx":
        raise ConfigError(f"quantize_onnx builds ONNX INT8, got backend {config.backend!r}")
    root = Path(export_dir)
    sections = {}
    for member in resolve_members(root):
        if calib is None:
            if not calib_values:
                raise ConfigError("INT8 needs calibration data: pass --calib synthetic or --calib NAME=PATH")
            card = layout.verified_card(member, _fp32_files())
            calib = load_calibration_set(calib_values, card, config.subset, config.seed, config.split)
        sections[str(member.relative_to(root))] = quantize_onnx_member(member, calib, config)
    return sections["."] if list(sections) == ["."] else {"members": sections}
