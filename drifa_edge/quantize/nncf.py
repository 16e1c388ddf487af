"""INT8 OpenVINO builds of an export folder with NNCF post-training quantization.

``quantize_openvino(OUT, calib_values, config)`` reads the FP32 IR graphs of
``OUT/openvino/`` and writes the same four graphs, quantized, into
``OUT/openvino-int8/`` (saved with ``compress_to_fp16=False``: the float parts
stay FP32, not FP16). The flow, top to bottom:

1. Calibration cases: real images through the card's preprocessing
   (:mod:`drifa_edge.quantize.calibration_set`), seeded subset.
2. Prefix: ``nncf.quantize`` on the images, one case per item (as at inference).
3. MC suffix: its inputs are the FP32 prefix's features. With masks on, each item
   is one case tiled ``rows_per_case`` times, so the statistics see the MC masks
   and their 1/(1-p) scaling as MC inference does. With masks off, the activation
   ranges come from the deterministic graph. ``suffix_det`` and ``suffix_masks`` are
   cut from the quantized MC suffix (:func:`build_int8_models`).
4. Ignored scope from the policy (:mod:`drifa_edge.quantize.scopes`); the MC-mask
   chain (random op, compare, convert, mask and scale Multiply) always stays float.
5. With ``max_drop`` (accuracy control, :mod:`drifa_edge.quantize.accuracy_control`),
   the ops NNCF had to revert to reach the drop stay float in all four graphs.
6. The card's ``export.int8.openvino`` section records the configuration, the
   calibration provenance (sha256 of the chosen files and their contents, subset,
   seed, preset, NNCF version), timings, sizes and quantized-op counts; the new files
   are hashed into ``card.files``. The same data, settings and FP32 graphs reuse
   the build; anything else rebuilds it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from drifa_edge.artifact import layout
from drifa_edge.artifact.ensemble import resolve_members
from drifa_edge.errors import ConfigError
from drifa_edge.progress import stage
from drifa_edge.quantize import build, ir, scopes
from drifa_edge.quantize.calibration_set import CalibrationSet, load_calibration_set
from drifa_edge.quantize.config import QuantizeConfig
from drifa_edge.quantize.nncf_api import nncf_imports, quantize_model

log = logging.getLogger(__name__)

RT_INFO_CARD = ["drifa_edge", "model_card"]  # where the export embeds the card in every IR
SECTION = "openvino"  # card.export["int8"][SECTION]
VAL_CASES = 100  # validation cases of the accuracy-controlled mode


def _fp32_files() -> list[str]:
    return [rel for g in layout.GRAPHS for rel in layout.openvino_files(g, "fp32")]


def _int8_files() -> list[str]:
    return [rel for g in layout.GRAPHS for rel in layout.openvino_files(g, "int8")]


# --------------------------------------------------------------------------- one graph


def build_int8_models(
    core: Any,
    fp32: dict[str, Any],
    card: Any,
    calib: CalibrationSet,
    config: QuantizeConfig,
    graphs: Sequence[str] = layout.GRAPHS,
) -> tuple[dict[str, Any], dict[str, float]]:
    """Quantize ``graphs`` in memory: ({graph: ov.Model}, {step: seconds}).

    NNCF runs on the prefix and on the MC suffix only. ``suffix_det`` and
    ``suffix_masks`` are then cut from the quantized MC suffix (dropout bypassed;
    random ops replaced by the ``uniform_<i>`` inputs), so all three suffix graphs
    share one quantization: a fixed-mask or dropout-off check of the INT8 build
    tests the very graph MC inference runs. With masks off, NNCF also calibrates the
    deterministic graph and its activation ranges replace the MC suffix's."""
    timings: dict[str, float] = {}
    models: dict[str, Any] = {}
    rows, seed = config.rows_per_case, config.seed

    def quantize(graph: str, items: list[dict[str, Any]]) -> Any:
        t = time.perf_counter()
        ignored = scopes.ov_ignored_names(fp32[graph], config.scope, config.keep_float)
        model = quantize_model(fp32[graph], items, config, ignored)
        timings[graph] = round(time.perf_counter() - t, 2)
        return model

    if "prefix" in graphs:
        if config.quantize_prefix:
            models["prefix"] = quantize("prefix", ir.image_items(card, calib.images))
        else:  # runs once per case: float costs little time and keeps every MC sample's input exact
            models["prefix"] = fp32["prefix"].clone()
    if not set(graphs) & {"suffix", "suffix_det", "suffix_masks"}:
        return models, timings
    t = time.perf_counter()
    feats = ir.prefix_features(core, fp32["prefix"], card, calib.images)
    timings["prefix_features"] = round(time.perf_counter() - t, 2)
    suffix = quantize("suffix", ir.suffix_items(card, feats, rows, True, seed))
    if not config.masks_on_during_calibration:
        det = quantize("suffix_det", ir.suffix_items(card, feats, rows, False, seed))
        copied, unmatched = ir.copy_activation_ranges(det, suffix)
        log.info("suffix: %d activation ranges from suffix_det, %d unmatched", copied, unmatched)
    models["suffix"] = suffix
    if "suffix_det" in graphs:
        models["suffix_det"] = ir.dropout_removed(suffix)
    if "suffix_masks" in graphs:
        try:
            models["suffix_masks"] = ir.masks_as_inputs(suffix, fp32["suffix_masks"])
        except ValueError as e:  # an exporter that names things differently: quantize it on its own
            log.warning("suffix_masks quantized separately (%s)", e)
            shapes = ir.uniform_shapes(fp32["suffix_masks"])
            models["suffix_masks"] = quantize(
                "suffix_masks", ir.suffix_items(card, feats, rows, True, seed, shapes)
            )
            if not config.masks_on_during_calibration:
                ir.copy_activation_ranges(det, models["suffix_masks"])
    return {g: m for g, m in models.items() if g in graphs}, timings


# --------------------------------------------------------------------------- export folder


def build_key(card: Any, calib: CalibrationSet, config: QuantizeConfig) -> str:
    """What an INT8 build depends on: the FP32 graphs, the calibration data and the settings."""
    return build.build_key(card, calib, config, _fp32_files())


def _reusable(root: Path, card: Any, key: str) -> bool:
    return build.reusable(root, card, SECTION, key, _int8_files())


def _save(ov: Any, model: Any, fp32_model: Any, path: Path) -> None:
    if fp32_model.has_rt_info(RT_INFO_CARD):  # keep the embedded card the runtimes check
        model.set_rt_info(fp32_model.get_rt_info(RT_INFO_CARD).astype(str), RT_INFO_CARD)
    ov.save_model(model, str(path), compress_to_fp16=False)


def quantize_member(
    root: Path, calib: CalibrationSet, config: QuantizeConfig, val: CalibrationSet | None = None
) -> dict[str, Any]:
    """Build (or reuse) ``root/openvino-int8`` of one model; returns its card section."""
    card = layout.verified_card(root, _fp32_files())
    key = build_key(card, calib, config)
    if _reusable(root, card, key):
        log.info("%s: INT8 build is up to date (same data, settings and FP32 graphs); reused", root)
        return {**card.export["int8"][SECTION], "reused": True}
    ov, _ = nncf_imports()
    started = time.perf_counter()
    extra: dict[str, Any] = {}
    used = config  # the settings plus the ops accuracy control reverted
    if config.max_drop is not None:
        if val is None:
            raise ConfigError(
                "accuracy control (--max-drop) needs validation cases (the --calib data's val split)"
            )
        from drifa_edge.quantize.accuracy_control import restore_keep_float

        report = restore_keep_float(root, calib, val, config, "accuracy", config.max_drop)
        extra["accuracy_control"] = report
        used = config.replace(keep_float=tuple(sorted(set(config.keep_float) | set(report["reverted"]))))
    stage(f"OpenVINO INT8 (NNCF): calibrating on {calib.cases} cases ({root})")
    core = ov.Core()
    fp32 = {g: core.read_model(str(root / layout.openvino_files(g, "fp32")[0])) for g in layout.GRAPHS}
    models, timings = build_int8_models(core, fp32, card, calib, used)
    (root / layout.openvino_folder("int8")).mkdir(parents=True, exist_ok=True)
    for g, model in models.items():
        _save(ov, model, fp32[g], root / layout.openvino_files(g, "int8")[0])
    section = {
        "key": key,
        "config": config.to_dict(),
        "keep_float": list(used.keep_float),
        "calibration": calib.provenance(config.seed, config.split, config.preset),
        "seconds": {**timings, "total": round(time.perf_counter() - started, 2)},
        "quantized_ops": {g: len(scopes.ov_quantized_ops(m)) for g, m in models.items()},
        "sizes_bytes": {rel: (root / rel).stat().st_size for rel in _int8_files()},
        **extra,
    }
    return build.record(root, card, SECTION, section, _int8_files())


def quantize_openvino(
    export_dir: str | Path,
    calib_values: Sequence[str] | None,
    config: QuantizeConfig | None = None,
    calib: CalibrationSet | None = None,
    val: CalibrationSet | None = None,
) -> dict[str, Any]:
    """Write ``openvino-int8/`` beside ``openvino/`` (every member of an ensemble) and return
    the card section (``{"members": {name: section}}`` for an ensemble). ``calib`` / ``val``
    replace drawing the cases from ``calib_values``; ``reused`` says a build was kept."""
    config = config or QuantizeConfig()
    if config.backend != "openvino" or config.method != "nncf":
        raise ConfigError(f"quantize_openvino builds OpenVINO + NNCF, got {config.backend} + {config.method}")
    root = Path(export_dir)
    members = resolve_members(root)
    sections = {}
    for member in members:
        card = layout.verified_card(member, _fp32_files())
        if calib is None:
            if not calib_values:
                raise ConfigError("INT8 needs calibration data: pass --calib synthetic or --calib NAME=PATH")
            calib = load_calibration_set(calib_values, card, config.subset, config.seed, config.split)
        if config.max_drop is not None and val is None and calib_values:
            val = load_calibration_set(calib_values, card, VAL_CASES, config.seed, "val")
        sections[str(member.relative_to(root))] = quantize_member(member, calib, config, val)
    return sections["."] if list(sections) == ["."] else {"members": sections}
