"""Preparing the graphs of a TensorRT build, on any x86 machine without TensorRT or a GPU.

The first half of ``export --trt`` (``--prepare-only``): Q/DQ graphs for int8
(:mod:`drifa_edge.quantize.tensorrt_qdq`, calibrated with onnxruntime on the CPU), FP16
graphs for fp16 on TensorRT 11 (:mod:`drifa_edge.quantize.mixed_precision`), and
``prepared.json`` recording the build path, the source graphs and their sha256. The
target then builds from the folder (:func:`drifa_edge.export.tensorrt.export_tensorrt`),
which matters on Jetson, where ModelOpt rarely installs. Files a failed step wrote are
removed (:class:`removed_on_failure`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from drifa_edge.artifact import layout
from drifa_edge.artifact.card import ModelCard
from drifa_edge.errors import BadInputError, ConfigError, ExportError, MissingDependencyError
from drifa_edge.export.tensorrt import (
    TensorRTProfile,
    _check_major,
    _check_precision,
    _suffix_graph,
    _write_json,
    build_path,
    graph_inputs,
    load_profile,
    row_range,
)
from drifa_edge.runtimes.tensorrt import import_tensorrt, tensorrt_major

log = logging.getLogger(__name__)


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
    written: list[Path] | None = None,
) -> dict[str, Any]:
    """Write ``prefix.qdq.onnx`` and ``suffix.qdq.onnx`` for an INT8 engine (CPU only,
    but see the README: ModelOpt creates a ``trt.Builder`` when TensorRT is importable).
    ``written`` collects each path before it is written (for clean-up on failure).

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
        if written is not None:
            written.append(dst)
        reports[graph] = q.quantize_for_tensorrt(export_dir / layout.onnx_file(src), dst, feeds[graph], qdq)
        files[graph] = dst
    return {"files": files, "reports": reports}


PREPARED_FILE = "prepared.json"
PREPARED_FORMAT = "drifa-edge-trt-prepared/1"


def prepare_graphs(
    export_dir: str | Path,
    target: str | Path | TensorRTProfile = "desktop-cuda",
    precision: str | None = None,
    tensorrt_major: int | None = None,
    calib_values=None,
    subset: int = 300,
    samples: int = 30,
    masks: str = "graph",
    qdq=None,
    fp16_backend: str = "auto",
) -> dict[str, Any]:
    """Write the ONNX graphs a TensorRT build needs, without TensorRT or a GPU.

    The first half of ``export --trt``: any x86 machine with onnx and onnxruntime
    (and ModelOpt if wanted) prepares; the target (a Jetson, where ModelOpt rarely
    installs) then builds from the folder with :func:`export_tensorrt`. What is
    written depends on :func:`build_path` for ``tensorrt_major`` (default: the
    installed TensorRT's): int8 -> ``prefix.qdq.onnx`` / ``suffix.qdq.onnx``; fp16
    on 11.x -> ``prefix.fp16.onnx`` / ``suffix.fp16.onnx``; otherwise the export's
    FP32 graphs are used as they are. ``prepared.json`` records the path, the
    sources, the reports and the sha256 of every graph. Files written by a failed
    call are removed.
    """
    from drifa_edge.artifact.card import sha256_file

    export_dir = Path(export_dir)
    profile = target if isinstance(target, TensorRTProfile) else load_profile(target)
    precision = precision or profile.default_precision
    _check_precision(precision, profile)
    if tensorrt_major is None:
        tensorrt_major = _installed_major(
            "pass tensorrt_major (--trt-major 10 for Jetson/JetPack, 11 for desktop CUDA): "
            "TensorRT is not importable here"
        )
    path = build_path(int(tensorrt_major), precision)
    _check_major(profile, path.major)
    suffix_graph = _suffix_graph(masks)
    if path.graph == "qdq" and calib_values is None:
        raise ConfigError("INT8 needs calibration images: pass --calib DATA (calib_values)")
    layout.verified_card(  # sha256 of the source graphs before anything is written
        export_dir, [layout.onnx_file("prefix"), layout.onnx_file(suffix_graph)]
    )
    folder = export_dir / layout.tensorrt_folder(profile.target, precision)
    sources = {g: layout.onnx_file(s) for g, s in (("prefix", "prefix"), ("suffix", suffix_graph))}
    reports: dict[str, Any] = {}
    with removed_on_failure(folder) as written:
        if path.graph == "qdq":
            config = qdq or _qdq_config()
            prepared = prepare_int8_onnx(
                export_dir,
                profile,
                calib_values,
                subset,
                samples,
                masks,
                qdq=config,
                out_dir=folder,
                written=written,
            )
            reports = prepared["reports"]
            sources = {g: f"{folder.name}/{p.name}" for g, p in prepared["files"].items()}
        elif path.graph == "fp16":
            from drifa_edge.quantize.mixed_precision import convert_fp16

            for graph, src in list(sources.items()):
                dst = folder / f"{graph}.fp16.onnx"
                written.append(dst)
                reports[graph] = convert_fp16(export_dir / src, dst, fp16_backend)
                sources[graph] = f"{folder.name}/{dst.name}"
        record = {
            "format": PREPARED_FORMAT,
            "target": profile.target,
            "precision": precision,
            "masks": masks,
            "samples": samples,
            "path": path.to_dict(),
            "graphs": sources,
            "sha256": {g: sha256_file(export_dir / rel) for g, rel in sources.items()},
            "reports": reports,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        written.append(folder / PREPARED_FILE)
        _write_json(folder / PREPARED_FILE, record)
    return record


def _installed_major(why: str) -> int:
    try:
        trt = import_tensorrt()
    except MissingDependencyError as e:
        raise ConfigError(why) from e
    return tensorrt_major(trt.__version__)


def _qdq_config():
    from drifa_edge.quantize.tensorrt_qdq import QDQConfig

    return QDQConfig()


def read_prepared(
    folder: Path, export_dir: Path, major: int, precision: str, masks: str
) -> dict[str, Any] | None:
    """The prepared graphs of ``folder`` if they fit this build (major, precision, masks), else None.

    Graphs prepared for another major are refused with the command that re-prepares;
    a graph whose sha256 differs from ``prepared.json`` is refused (edited or truncated).
    """
    from drifa_edge.artifact.card import sha256_file

    file = folder / PREPARED_FILE
    if not file.is_file():
        return None
    try:
        record = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ExportError(f"{file}: unreadable ({e}); delete it and prepare again") from e
    if (record.get("precision"), record.get("masks")) != (precision, masks):
        return None
    if record["path"]["major"] != major:
        raise ExportError(
            f"{folder}: graphs prepared for TensorRT {record['path']['major']}.x, this machine has {major}.x; "
            f"prepare again with --trt-major {major} (or delete {PREPARED_FILE})"
        )
    for graph, rel in record["graphs"].items():
        if sha256_file(export_dir / rel) != record["sha256"][graph]:
            raise ExportError(f"{export_dir / rel}: sha256 differs from {file}; prepare again")
    return record


class removed_on_failure:
    """Context manager: on an exception, delete the files listed in ``written`` (and
    their ``.tmp`` siblings) and the folder when this call created it and left it empty."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.created = not folder.exists()
        self.written: list[Path] = []

    def __enter__(self) -> list[Path]:
        self.folder.mkdir(parents=True, exist_ok=True)
        return self.written

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            return False
        for path in self.written:
            for p in (path, path.with_suffix(".tmp")):
                with contextlib.suppress(OSError):
                    p.unlink()
        if self.created and self.folder.is_dir() and not any(self.folder.iterdir()):
            self.folder.rmdir()
        log.error(
            "TensorRT step failed; removed %d file(s) it had started in %s", len(self.written), self.folder
        )
        return False
