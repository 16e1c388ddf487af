"""TensorRT engines from the exported ONNX graphs (TensorRT >= 10, NVIDIA GPUs and Jetson).

``export_tensorrt(OUT, target, precision)`` builds one serialized engine per
graph into ``OUT/tensorrt-<target>-<precision>/``: ``prefix.engine`` (images ->
features) and ``suffix.engine`` (features -> logits, MC masks drawn inside the
engine by TensorRT's random fill layer, or fed from the host with
``masks="host"``), plus ``build.json`` (TensorRT version, GPU, profiles, flags).
The card hashes every file and records the settings under ``export.tensorrt``.

Each engine has one optimization profile over its batch axis, from the target
profile in ``export/<target>.toml`` (section ``[tensorrt]``): the suffix covers
B*T rows per call (``rows_min/opt/max``), the prefix the cases per call
(rows / T). INT8 is explicit quantization: Q/DQ ONNX graphs first
(:mod:`drifa_edge.quantize.tensorrt_qdq`), then an INT8 + FP16 build; TensorRT's
implicit calibrator is not used. Jetson: DLA core with GPU fallback and a
workspace limit, set in the target profile.

``tensorrt`` is imported lazily; without it every build entry point raises
:class:`MissingDependencyError`. Engines are tied to the GPU and TensorRT
version that built them: build on the device that will run them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from drifa_edge.artifact import layout
from drifa_edge.artifact.atomic import atomic_write
from drifa_edge.artifact.card import ModelCard
from drifa_edge.errors import (
    BadInputError,
    ConfigError,
    ExportError,
    suggest,
)
from drifa_edge.profiles import profile_file, profile_names, read_toml
from drifa_edge.runtimes.tensorrt import INSTALL_HINT, import_tensorrt  # noqa: F401 - re-exported

log = logging.getLogger(__name__)

PRECISIONS = layout.TENSORRT_PRECISIONS
GRAPHS = layout.TENSORRT_GRAPHS
MASK_MODES = {"graph": "suffix", "host": "suffix_masks"}  # masks -> the ONNX suffix graph
BUILD_FILE = layout.TENSORRT_BUILD_FILE
BUILD_FORMAT = "drifa-edge-trt-build/1"
# --------------------------------------------------------------------------- target profiles


def targets_dir() -> Path | None:
    """Folder of user target profiles set by $DRIFA_TARGETS_DIR; None means the shipped profiles
    (package data, :mod:`drifa_edge.profiles`)."""
    env = os.environ.get("DRIFA_TARGETS_DIR")
    return Path(env) if env else None


@dataclass(frozen=True)
class TensorRTProfile:
    """The ``[tensorrt]`` section of a target profile (``export/<target>.toml``).

    Rows are suffix rows per call (cases x MC samples). DLA has no dynamic shapes,
    so a DLA profile must have rows_min == rows_opt == rows_max (calls are padded).
    """

    target: str
    rows_min: int = 1
    rows_opt: int = 30
    rows_max: int = 240
    workspace_mb: int = 2048
    fp16: bool = True  # default precision of the target: fp16, else fp32
    dla_core: int = -1  # -1 = GPU only; Jetson Orin has DLA cores 0 and 1
    gpu_fallback: bool = True  # layers DLA cannot run go to the GPU
    builder_optimization_level: int = 3  # TensorRT 0..5; higher builds slower, may run faster

    def __post_init__(self) -> None:
        where = f"target {self.target!r}, [tensorrt]"
        for key in (
            "rows_min",
            "rows_opt",
            "rows_max",
            "workspace_mb",
            "dla_core",
            "builder_optimization_level",
        ):
            if not isinstance(getattr(self, key), int) or isinstance(getattr(self, key), bool):
                raise ConfigError(f"{where}: {key} must be an integer, got {getattr(self, key)!r}")
        if not 1 <= self.rows_min <= self.rows_opt <= self.rows_max:
            raise ConfigError(
                f"{where}: rows must satisfy 1 <= rows_min <= rows_opt <= rows_max, got "
                f"{self.rows_min} / {self.rows_opt} / {self.rows_max}"
            )
        if self.workspace_mb <= 0:
            raise ConfigError(f"{where}: workspace_mb must be > 0, got {self.workspace_mb}")
        if self.dla_core < -1:
            raise ConfigError(
                f"{where}: dla_core must be -1 (no DLA) or a DLA core index >= 0, got {self.dla_core}"
            )
        if self.dla_core >= 0 and not self.rows_min == self.rows_opt == self.rows_max:
            raise ConfigError(
                f"{where}: DLA does not support dynamic shapes; with dla_core = {self.dla_core} set "
                f"rows_min = rows_opt = rows_max (got {self.rows_min} / {self.rows_opt} / {self.rows_max})"
            )
        if not 0 <= self.builder_optimization_level <= 5:
            raise ConfigError(
                f"{where}: builder_optimization_level must be in 0..5, got {self.builder_optimization_level}"
            )
        for key in ("fp16", "gpu_fallback"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"{where}: {key} must be true or false, got {getattr(self, key)!r}")

    @property
    def static(self) -> bool:
        return self.rows_min == self.rows_max

    @property
    def default_precision(self) -> str:
        return "fp16" if self.fp16 else "fp32"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, target: str, d: dict[str, Any]) -> TensorRTProfile:
        known = [f.name for f in dataclasses.fields(cls) if f.name != "target"]
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ConfigError(
                f"target {target!r}, [tensorrt]: unknown key(s) {unknown}; known keys are {known}"
                + suggest(unknown[0], known)
            )
        return cls(target=target, **d)


def load_profile(target: str | Path) -> TensorRTProfile:
    """The TensorRT settings of a target: a shipped profile name ("jetson-orin"), a name in
    $DRIFA_TARGETS_DIR when set, or a TOML path."""
    path = Path(target)
    if not path.is_file():
        folder = targets_dir()
        if folder is not None:
            named = folder / f"{target}.toml"
            named = named if named.is_file() else None
            known = sorted(p.stem for p in folder.glob("*.toml")) if folder.is_dir() else []
            where = f"looked in {folder} (DRIFA_TARGETS_DIR)"
        else:
            named = profile_file("export", str(target))
            known = profile_names("export")
            where = "the shipped profiles; set DRIFA_TARGETS_DIR to use a folder of your own"
        if path.suffix or named is None:
            raise ConfigError(
                f"target profile {str(target)!r} not found; pass a TOML file or one of {known} "
                f"({where})" + suggest(str(target), known)
            )
        path = named
    data = read_toml(path)
    section = data.get("tensorrt")
    if not isinstance(section, dict):
        raise ConfigError(
            f"{path}: no [tensorrt] section, so {path.name.removesuffix('.toml')!r} is not a TensorRT target "
            "(TensorRT targets: desktop-cuda, jetson-orin)"
        )
    return TensorRTProfile.from_dict(path.name.removesuffix(".toml"), section)


def row_range(profile: TensorRTProfile, graph: str, samples: int = 30) -> tuple[int, int, int]:
    """(min, opt, max) rows per call of one graph.

    Suffix rows are cases x samples. The engine runs the prefix on the cases one
    suffix call touches: ``rows`` consecutive (case, sample) rows span at most
    ceil((rows + T - 1) / T) cases (a call may start and end inside a case).
    """
    if graph not in GRAPHS:
        raise ConfigError(f"graph must be one of {GRAPHS}, got {graph!r}")
    if samples < 1:
        raise ConfigError(f"samples (T) must be >= 1, got {samples}")
    if graph != "prefix":
        return profile.rows_min, profile.rows_opt, profile.rows_max
    opt = max(1, profile.rows_opt // samples)
    if profile.static:
        return opt, opt, opt
    return 1, opt, max(opt, (profile.rows_max + samples - 2) // samples + 1)


def graph_inputs(card: ModelCard, graph: str) -> dict[str, tuple[int, ...]]:
    """Input name -> shape without the batch axis, from the card (torch-free)."""
    from drifa_edge.model.config import dropout_shapes

    cfg = card.model
    if graph == "prefix":
        return {layout.image_name(t.name): (t.channels, cfg.image_size, cfg.image_size) for t in cfg.tasks}
    side = cfg.image_size // 4
    shapes = {layout.feature_name(t.name): (cfg.stage_widths[0], side, side) for t in cfg.tasks}
    if graph == "suffix_masks":
        shapes.update({layout.uniform_name(i): tuple(s) for i, s in enumerate(dropout_shapes(cfg))})
    return shapes


def profile_shapes(
    card: ModelCard, profile: TensorRTProfile, graph: str = "prefix", samples: int = 30
) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """Optimization-profile shapes ``{input: (min, opt, max)}`` of one graph."""
    lo, opt, hi = row_range(profile, graph, samples)
    return {name: ((lo, *s), (opt, *s), (hi, *s)) for name, s in graph_inputs(card, graph).items()}


# --------------------------------------------------------------------------- engine build


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    profile: TensorRTProfile,
    precision: str,
    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]],
    verbose: bool = False,
) -> dict[str, Any]:
    """Parse one ONNX graph and write a serialized engine; return what was built.

    ``precision`` fp16/int8 set FP16 (int8 also INT8, for a Q/DQ graph); DLA and
    the workspace limit come from ``profile``.
    """
    trt = import_tensorrt()
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    _check_precision(precision, profile)
    logger = trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(min(parser.num_errors, 5)))
        raise ExportError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, profile.workspace_mb << 20)
    config.builder_optimization_level = profile.builder_optimization_level
    flags = []
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
        flags.append("FP16")
    if precision == "int8":
        if not _has_qdq(onnx_path):
            raise ExportError(
                f"{onnx_path.name} has no Q/DQ nodes; TensorRT >= 10 INT8 needs an explicitly "
                "quantized graph (export_tensorrt(..., precision='int8') writes one)"
            )
        config.set_flag(trt.BuilderFlag.INT8)
        flags.append("INT8")
    if profile.dla_core >= 0:
        if builder.num_DLA_cores <= profile.dla_core:
            raise ExportError(
                f"target {profile.target!r} asks for DLA core {profile.dla_core}, this device has "
                f"{builder.num_DLA_cores}; set dla_core = -1 for the GPU"
            )
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = profile.dla_core
        flags.append(f"DLA{profile.dla_core}")
        if profile.gpu_fallback:
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
            flags.append("GPU_FALLBACK")
    opt_profile = builder.create_optimization_profile()
    used = _set_profile_shapes(network, opt_profile, shapes)
    config.add_optimization_profile(opt_profile)
    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(
            f"TensorRT failed to build an engine from {onnx_path.name} ({precision}, target "
            f"{profile.target!r}); re-run with verbose=True for TensorRT's log"
        )
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = engine_path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(serialized)
    tmp.replace(engine_path)
    return {
        "onnx": onnx_path.name,
        "flags": flags,
        "shapes": {k: [list(s) for s in v] for k, v in used.items()},
        "build_seconds": round(time.perf_counter() - start, 2),
        "bytes": engine_path.stat().st_size,
    }


def _check_precision(precision: str, profile: TensorRTProfile) -> None:
    if precision not in PRECISIONS:
        raise ConfigError(f"TensorRT precision must be one of {PRECISIONS}, got {precision!r}")
    if profile.dla_core >= 0 and precision == "fp32":
        raise ConfigError(
            f"target {profile.target!r} uses DLA core {profile.dla_core}; DLA runs fp16 or int8, not fp32"
        )


def _has_qdq(onnx_path: Path) -> bool:
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    return any(n.op_type == "QuantizeLinear" for n in model.graph.node)


def _set_profile_shapes(network, opt_profile, shapes: dict) -> dict:
    """Set (min, opt, max) for every network input; an input missing from ``shapes``
    gets the same rows with its static dimensions. Refuses a card/ONNX mismatch."""
    rows = next(iter(shapes.values()))
    used = {}
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        dims = tuple(tensor.shape)
        if tensor.name in shapes:
            mn, opt, mx = shapes[tensor.name]
            if tuple(mx[1:]) != dims[1:]:
                raise ExportError(
                    f"input {tensor.name!r}: the ONNX graph has shape {dims}, the model card implies "
                    f"(rows, {', '.join(map(str, mx[1:]))}); the export folder is inconsistent, re-export it"
                )
        elif all(d > 0 for d in dims[1:]):
            mn, opt, mx = ((r[0], *dims[1:]) for r in rows)
        else:
            raise ExportError(f"input {tensor.name!r} has dynamic dimensions {dims} beyond the batch axis")
        opt_profile.set_shape(tensor.name, mn, opt, mx)
        used[tensor.name] = (tuple(mn), tuple(opt), tuple(mx))
    return used


# --------------------------------------------------------------------------- INT8 (Q/DQ) graphs


def _calibration_arrays(card: ModelCard, calib_values) -> list[np.ndarray]:
    """Calibration images per modality, card order; accepts a list or {task: array}."""
    tasks = card.model.tasks
    if isinstance(calib_values, dict):
        missing = [t.name for t in tasks if t.name not in calib_values]
        if missing:
            raise BadInputError(f"calibration values lack task(s) {missing}; got {sorted(calib_values)}")
        calib_values = [calib_values[t.name] for t in tasks]
    arrays = [np.asarray(a, dtype=np.float32) for a in calib_values]
    if len(arrays) != len(tasks):
        raise BadInputError(f"need calibration images for {len(tasks)} modalities, got {len(arrays)}")
    size = card.model.image_size
    for t, a in zip(tasks, arrays, strict=True):
        if a.ndim != 4 or a.shape[1:] != (t.channels, size, size):
            raise BadInputError(
                f"calibration images for {t.name!r}: expected (N, {t.channels}, {size}, {size}), got {a.shape}"
            )
        if not np.isfinite(a).all():
            raise BadInputError(f"calibration images for {t.name!r} contain NaN or Inf")
    if len({len(a) for a in arrays}) != 1:
        raise BadInputError(f"calibration arrays differ in length: {[len(a) for a in arrays]}")
    return arrays


def prepare_int8_onnx(
    export_dir: str | Path,
    profile: TensorRTProfile,
    calib_values,
    subset: int = 300,
    samples: int = 30,
    masks: str = "graph",
    qdq=None,
    out_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Write ``prefix.qdq.onnx`` and ``suffix.qdq.onnx`` for an INT8 engine (CPU only).

    The prefix is calibrated on the images; the suffix on their FP32 prefix
    features (onnxruntime), each case tiled ``qdq.masks_per_case`` times so the
    ranges cover several MC masks. Batches are sized within the profile's rows.
    Returns ``{"files": {graph: path}, "reports": {graph: report}}``.
    """
    from drifa_edge.quantize import tensorrt_qdq as q

    export_dir = Path(export_dir)
    suffix_graph = _suffix_graph(masks)
    card = layout.verified_card(export_dir, [layout.onnx_file("prefix"), layout.onnx_file(suffix_graph)])
    qdq = dataclasses.replace(qdq or q.QDQConfig(), subset=subset)
    images = [a[q.evenly_spaced(len(a), qdq.subset)] for a in _calibration_arrays(card, calib_values)]
    out_dir = Path(out_dir) if out_dir else export_dir / layout.tensorrt_folder(profile.target, "int8")
    names = [t.name for t in card.model.tasks]
    image_names = [layout.image_name(n) for n in names]
    feat_names = [layout.feature_name(n) for n in names]
    prefix_rows = row_range(profile, "prefix", samples)
    suffix_rows = row_range(profile, suffix_graph, samples)
    prefix_onnx = export_dir / layout.onnx_file("prefix")
    feeds = {
        "prefix": [dict(zip(image_names, b, strict=True)) for b in q.calibration_batches(images, prefix_rows)]
    }
    feats = q.prefix_features(prefix_onnx, images, prefix_rows, image_names, feat_names)
    tiled = q.tile_cases(feats, qdq.masks_per_case)
    feeds["suffix"] = [
        dict(zip(feat_names, b, strict=True)) for b in q.calibration_batches(tiled, suffix_rows)
    ]
    if suffix_graph == "suffix_masks":  # host masks: calibrate with uniforms drawn like the runtime's
        rng = np.random.default_rng(0)
        shapes = graph_inputs(card, "suffix_masks")
        for feed in feeds["suffix"]:
            rows = len(feed[feat_names[0]])
            for name, s in shapes.items():
                if name not in feed:
                    feed[name] = rng.random((rows, *s), dtype=np.float32)
    out_dir.mkdir(parents=True, exist_ok=True)
    files, reports = {}, {}
    for graph, src in (("prefix", "prefix"), ("suffix", suffix_graph)):
        dst = out_dir / f"{graph}.qdq.onnx"
        reports[graph] = q.quantize_for_tensorrt(export_dir / layout.onnx_file(src), dst, feeds[graph], qdq)
        files[graph] = dst
    return {"files": files, "reports": reports}


# --------------------------------------------------------------------------- export


def _suffix_graph(masks: str) -> str:
    if masks not in MASK_MODES:
        raise ConfigError(f"masks must be one of {sorted(MASK_MODES)}, got {masks!r}")
    return MASK_MODES[masks]


def export_tensorrt(
    export_dir: str | Path,
    target: str | Path | TensorRTProfile = "desktop-cuda",
    precision: str | None = None,
    calib_values=None,
    subset: int = 300,
    samples: int = 30,
    masks: str = "graph",
    check: bool = True,
    verbose: bool = False,
) -> dict[str, Any]:
    """Build the TensorRT engines of an export folder for one target; return a summary.

    ``precision`` defaults to the target's (fp16 where ``fp16 = true``). ``int8``
    needs ``calib_values`` (preprocessed images per modality, (N, C, H, W)), of
    which ``subset`` cases are used. ``samples`` (T) sizes the prefix profile.
    ``masks="graph"`` keeps the MC masks inside the engine (not seedable);
    ``"host"`` builds the suffix with uniform inputs the runtime draws with numpy
    (seedable, more host-to-device traffic). With ``check`` the engines are
    opened once: prefix against onnxruntime FP32, MC masks must vary.
    """
    trt = import_tensorrt()  # fail before any work on a machine without TensorRT
    export_dir = Path(export_dir)
    profile = target if isinstance(target, TensorRTProfile) else load_profile(target)
    precision = precision or profile.default_precision
    _check_precision(precision, profile)
    suffix_graph = _suffix_graph(masks)
    if precision == "int8" and calib_values is None:
        raise ConfigError("INT8 needs calibration images: pass --calib DATA (calib_values)")
    card = layout.verified_card(export_dir, [layout.onnx_file("prefix"), layout.onnx_file(suffix_graph)])
    folder_name = layout.tensorrt_folder(profile.target, precision)
    folder = export_dir / folder_name
    folder.mkdir(parents=True, exist_ok=True)
    sources = {
        g: export_dir / layout.onnx_file(s) for g, s in (("prefix", "prefix"), ("suffix", suffix_graph))
    }
    quantization = None
    if precision == "int8":
        prepared = prepare_int8_onnx(
            export_dir, profile, calib_values, subset, samples, masks, out_dir=folder
        )
        sources, quantization = prepared["files"], prepared["reports"]
    engines = {}
    for graph, src in sources.items():
        shapes = profile_shapes(card, profile, "prefix" if graph == "prefix" else suffix_graph, samples)
        engines[graph] = build_engine(src, folder / f"{graph}.engine", profile, precision, shapes, verbose)
    from drifa_edge.runtimes.tensorrt import cuda_device_info

    build = {
        "format": BUILD_FORMAT,
        "tensorrt": str(trt.__version__),
        "gpu": cuda_device_info(0),
        "target": profile.target,
        "precision": precision,
        "masks": masks,
        "samples": samples,
        "profile": profile.to_dict(),
        "engines": engines,
        "quantization": quantization,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    _write_json(folder / BUILD_FILE, build)
    rel = [f"{folder_name}/{g}.engine" for g in engines] + [f"{folder_name}/{BUILD_FILE}"]
    if quantization:
        rel += [f"{folder_name}/{g}.qdq.onnx" for g in sources]
    section = dict(card.export.get("tensorrt", {}))
    section[folder_name] = {
        k: build[k] for k in ("tensorrt", "gpu", "target", "precision", "masks", "samples")
    }
    section[folder_name]["profile"] = profile.to_dict()
    layout.update_card(export_dir, {"tensorrt": section}, hash_files=rel)
    summary = {"folder": str(folder), "files": rel, **{k: build[k] for k in ("tensorrt", "gpu", "precision")}}
    if check:
        summary["checks"] = check_engines(export_dir, folder_name, precision)
    return summary


# Max |feature difference| / max |feature| of the prefix engine against onnxruntime FP32.
# fp32: TensorRT may reorder float arithmetic (TF32 is off unless asked for); fp16: ~11-bit
# mantissa through ~10 layers; int8: per-tensor 8-bit activations measured ~1-2 % with the same
# Q/DQ graph in onnxruntime. Limits set from those numbers, not yet measured on a GPU.
PREFIX_TOLERANCE = {"fp32": 1e-3, "fp16": 2e-2, "int8": 1e-1}


def check_engines(export_dir: str | Path, folder_name: str, precision: str, cases: int = 4) -> list:
    """The export checks for a fresh build (needs the GPU that built it).

    Prefix features against onnxruntime FP32 (relative limit per precision); the MC
    masks must differ between calls and between rows (:func:`checks.check_stochastic`);
    for fp32 builds the MC mean/std per class must agree with onnxruntime's
    (:func:`checks.check_mc_consistency`). FP16/INT8 distributions are judged by the
    drift gate, not here. Results go to ``checks.json``; a failure raises ParityError.
    """
    from drifa_edge.export import checks
    from drifa_edge.runtimes.base import RuntimeOptions, open_runtime

    export_dir = Path(export_dir)
    config = checks.CheckConfig(cases=cases)
    options = RuntimeOptions(precision=precision, device="cuda:0")
    cand = open_runtime("tensorrt", export_dir / folder_name, options)
    ref = open_runtime("onnxruntime", export_dir, RuntimeOptions())
    try:
        images = checks.random_images(ref, config.cases, config.seed)
        ref_feats, cand_feats = ref.run_prefix(images), cand.run_prefix(images)
        scale = max(float(np.abs(f).max()) for f in ref_feats) or 1.0
        rel = max(float(np.abs(a - b).max()) for a, b in zip(cand_feats, ref_feats, strict=True)) / scale
        limit = PREFIX_TOLERANCE[precision]
        results = [
            checks.CheckResult(
                "prefix_parity", folder_name, rel <= limit, rel, limit, {"reference": "onnxruntime"}
            )
        ]
        results.append(dataclasses.replace(checks.check_stochastic(cand, images), runtime=folder_name))
        if precision == "fp32":
            mc = checks.check_mc_consistency(ref, cand, images, config)
            results.append(dataclasses.replace(mc, runtime=folder_name))
    finally:
        cand.close()
        ref.close()
    checks.record_checks(export_dir, results)
    if any(r.name == "mc_stochastic" and not r.passed for r in results):
        log.error(
            "%s: TensorRT's random layer did not vary the MC masks; re-export with masks='host' "
            "(the runtime then draws the uniforms with numpy)",
            folder_name,
        )
    checks.raise_on_failure(export_dir, results)
    return [r.to_dict() for r in results]


def _write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
