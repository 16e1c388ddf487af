"""Revert the most harmful quantized layers to float until a metric fits.

Both the accuracy-controlled mode (``--max-drop``) and the sensitivity-chosen
ignored scope run ``nncf.quantize_with_accuracy_control`` on the
``suffix_masks`` graph, whose MC masks are inputs: every validation case gets
its own fixed uniforms, so the FP32 and the INT8 graph see *the same* masks and
the metric has no MC noise (OpenVINO's in-graph random ops cannot be reseeded
per call). NNCF ranks quantizer groups by their effect on the metric and reverts
them one by one until the drop is within ``max_drop``; the names of the ops it
reverted become ``keep_float`` for all four graphs.

Two metrics (higher is better, per case and overall):

- ``accuracy``: mean over tasks of the accuracy of the MC mean prediction;
- ``drift``: 1 - KL(FP32 MC mean || INT8 MC mean) in nats, averaged over tasks,
  with paired masks (FP32 itself scores 1, so the drop is the KL). Its budget is a fraction of the MC noise floor, the KL
  between two FP32 runs with different masks, measured here too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from drifa_edge.artifact import layout
from drifa_edge.errors import ConfigError, ExportError
from drifa_edge.inference.engine import softmax
from drifa_edge.quantize import ir, scopes
from drifa_edge.quantize.calibration_set import CalibrationSet
from drifa_edge.quantize.config import QuantizeConfig

log = logging.getLogger(__name__)

METRICS = ("accuracy", "drift")


def _kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-12, 1.0)
    q = np.clip(q, 1e-12, 1.0)
    return np.sum(p * (np.log(p) - np.log(q)), axis=-1)


def masked_items(
    card: Any, features: Sequence[np.ndarray], rows: int, shapes: dict[str, tuple[int, ...]], seed: int
) -> list[dict[str, np.ndarray]]:
    """One item per case: its features tiled ``rows`` times and seeded uniforms (fixed masks)."""
    names = [layout.feature_name(t) for t in card.task_names]
    items = []
    for case in range(features[0].shape[0]):
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 11, case])
        item = {n: np.repeat(f[case : case + 1], rows, axis=0) for n, f in zip(names, features, strict=True)}
        for name, shape in shapes.items():
            item[name] = rng.random((rows, *shape), dtype=np.float32)
        items.append(item)
    return items


def mc_means(compiled: Any, card: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """MC mean probabilities (C,) per task of one item (rows = MC samples), card temperatures."""
    result = compiled(feeds)
    out = []
    for task in card.task_names:
        logits = np.asarray(result[compiled.output(layout.logits_name(task))], dtype=np.float64)
        out.append(softmax(logits, card.temperature_of(task)).mean(axis=0))
    return out


def validation_set(
    compiled_fp32: Any, card: Any, items: list[dict[str, np.ndarray]], labels: Sequence[np.ndarray]
) -> list[tuple[dict[str, np.ndarray], list[np.ndarray], list[int]]]:
    """(feeds, FP32 MC means per task, label per task) for every validation case."""
    return [
        (feeds, mc_means(compiled_fp32, card, feeds), [int(y[i]) for y in labels])
        for i, feeds in enumerate(items)
    ]


def make_validation_fn(card: Any, metric: str):
    """A ``validation_fn(compiled_model, items) -> (metric, per-item values)`` for NNCF."""
    if metric not in METRICS:
        raise ConfigError(f"unknown metric {metric!r}; choose one of {METRICS}")

    def validate(model: Any, items: Any) -> tuple[float, list[float]]:
        values = []
        for feeds, reference, labels in items:
            means = mc_means(model, card, feeds)
            if metric == "accuracy":
                values.append(float(np.mean([m.argmax() == y for m, y in zip(means, labels, strict=True)])))
            else:
                # 1 - KL: FP32 scores exactly 1 (NNCF divides by the reference metric)
                values.append(
                    1.0 - float(np.mean([_kl(r, m) for r, m in zip(reference, means, strict=True)]))
                )
        return float(np.mean(values)), values

    return validate


def noise_floor_kl(compiled_fp32: Any, card: Any, val: list, rows: int, shapes: dict, seed: int) -> float:
    """Mean KL between the FP32 MC means of two runs with different masks (the MC noise)."""
    features = [[feeds[layout.feature_name(t)][:1] for t in card.task_names] for feeds, _, _ in val]
    total = []
    for case, ((_, reference, _), feats) in enumerate(zip(val, features, strict=True)):
        other = masked_items(card, feats, rows, shapes, seed + 1_000_003 + case)[0]
        means = mc_means(compiled_fp32, card, other)
        total.append(np.mean([_kl(r, m) for r, m in zip(reference, means, strict=True)]))
    return float(np.mean(total))


def restore_to_budget(
    fp32_masks_model: Any,
    calibration: list[dict[str, np.ndarray]],
    val: list,
    card: Any,
    config: QuantizeConfig,
    metric: str,
    max_drop: float,
    ranking_subset: int | None = None,
    max_iterations: int | None = None,
) -> tuple[Any, list[str], dict[str, Any]]:
    """Quantize ``suffix_masks`` with accuracy control; returns (model, reverted op names, report)."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    from drifa_edge.quantize.nncf_api import nncf_arguments, quantize_model

    ignored = scopes.ov_ignored_names(fp32_masks_model, config.scope, config.keep_float)
    kwargs = nncf_arguments(config, ignored, len(calibration))
    if config.scope == "all":  # NNCF decides the sites: see where a plain run puts them
        intended = scopes.ov_quantized_ops(
            quantize_model(fp32_masks_model.clone(), calibration, config, ignored)
        )
    else:
        intended = set(scopes.ov_policy_quantized_ops(fp32_masks_model, config.scope)) - set(
            config.keep_float
        )
    restorer = AdvancedAccuracyRestorerParameters(
        ranking_subset_size=ranking_subset,
        **({"max_num_iterations": max_iterations} if max_iterations else {}),
    )
    try:
        model = nncf.quantize_with_accuracy_control(
            fp32_masks_model,
            nncf.Dataset(calibration),
            nncf.Dataset(val),
            make_validation_fn(card, metric),
            max_drop=max_drop,
            drop_type=nncf.DropType.ABSOLUTE,
            preset=kwargs["preset"],
            subset_size=kwargs["subset_size"],
            fast_bias_correction=kwargs["fast_bias_correction"],
            model_type=kwargs["model_type"],
            ignored_scope=kwargs["ignored_scope"],
            advanced_quantization_parameters=kwargs["advanced_parameters"],
            advanced_accuracy_restorer_parameters=restorer,
        )
    except Exception as e:
        raise ExportError(f"NNCF accuracy control failed: {e}") from e
    quantized = scopes.ov_quantized_ops(model)
    reverted = sorted(set(intended) - quantized)
    report = {"metric": metric, "max_drop": max_drop, "reverted": reverted, "quantized_ops": len(quantized)}
    log.info("accuracy control (%s): %d ops reverted to float", metric, len(reverted))
    return model, reverted, report


def restore_keep_float(
    export_dir: str | Path,
    calib: CalibrationSet,
    val: CalibrationSet,
    config: QuantizeConfig,
    metric: str,
    max_drop: float | None = None,
    noise_fraction: float = 0.5,
    ranking_subset: int | None = None,
) -> dict[str, Any]:
    """Accuracy control on the FP32 ``suffix_masks`` of an export folder; returns the report
    whose ``reverted`` lists the op names to keep float. ``metric="drift"`` without
    ``max_drop`` takes ``noise_fraction`` x the MC noise floor's KL as the budget."""
    import openvino as ov

    root = Path(export_dir)
    files = [rel for g in layout.GRAPHS for rel in layout.openvino_files(g, "fp32")]
    card = layout.verified_card(root, files)
    core = ov.Core()
    fp32 = {
        g: core.read_model(str(root / layout.openvino_files(g, "fp32")[0]))
        for g in ("prefix", "suffix_masks")
    }
    if metric == "accuracy" and any((y < 0).any() for y in val.labels):
        raise ConfigError(
            "accuracy control needs validation images labelled with the model's classes; "
            "the --calib data's classes differ from the model's (pass the training data)"
        )
    rows, seed = config.rows_per_case, config.seed
    shapes = ir.uniform_shapes(fp32["suffix_masks"])
    compiled = ir.compile_fp32(core, fp32["suffix_masks"])
    val_feats = ir.prefix_features(core, fp32["prefix"], card, val.images)
    val_items = validation_set(compiled, card, masked_items(card, val_feats, rows, shapes, seed), val.labels)
    calib_feats = ir.prefix_features(core, fp32["prefix"], card, calib.images)
    calibration = ir.suffix_items(card, calib_feats, rows, True, seed, shapes)
    noise = noise_floor_kl(compiled, card, val_items, rows, shapes, seed) if metric == "drift" else None
    if max_drop is None:
        if noise is None:
            raise ConfigError("accuracy control needs max_drop (an absolute accuracy drop, e.g. 0.01)")
        max_drop = noise_fraction * noise
    t = time.perf_counter()
    _, reverted, report = restore_to_budget(
        fp32["suffix_masks"], calibration, val_items, card, config, metric, max_drop, ranking_subset
    )
    report.update({"noise_kl": noise, "val_cases": val.cases, "seconds": round(time.perf_counter() - t, 2)})
    return report
