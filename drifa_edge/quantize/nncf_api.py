"""The NNCF calls drifa-edge makes, in one place: import, ``nncf.quantize`` arguments from a
:class:`~drifa_edge.quantize.config.QuantizeConfig`, and one graph's quantization.

Used by the OpenVINO build (:mod:`.nncf`), its accuracy control (:mod:`.accuracy_control`)
and NNCF-ONNX (:mod:`.onnxrt`), which therefore do not import each other for it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from drifa_edge.errors import ExportError, missing_dependency
from drifa_edge.quantize.config import QuantizeConfig

log = logging.getLogger("drifa_edge.quantize.nncf")  # the OpenVINO build's logger, as before


def nncf_imports():
    """(openvino, nncf), imported; NNCF's per-node INFO logging turned down."""
    try:
        import nncf
        import openvino as ov
    except ImportError as e:
        raise missing_dependency(e.name or "nncf", "quantize") from e
    if not log.isEnabledFor(logging.DEBUG):  # NNCF logs every ignored node at INFO
        nncf.set_log_level(logging.WARNING)
    return ov, nncf


def nncf_arguments(config: QuantizeConfig, ignored: Sequence[str], items: int) -> dict[str, Any]:
    """Keyword arguments of ``nncf.quantize`` for one graph."""
    _, nncf = nncf_imports()
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, QuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParameters, RangeEstimatorParametersSet

    ranges = RangeEstimatorParametersSet.MINMAX if config.range_estimator == "minmax" else None
    advanced = AdvancedQuantizationParameters(
        disable_bias_correction=config.bias_correction == "none",
        weights_quantization_params=QuantizationParameters(per_channel=config.per_channel),
        activations_range_estimator_params=ranges or RangeEstimatorParameters(),
    )
    return {
        "preset": nncf.QuantizationPreset(config.preset),
        "subset_size": items,
        "fast_bias_correction": config.bias_correction != "full",
        "model_type": nncf.ModelType(config.model_type) if config.model_type else None,
        "ignored_scope": nncf.IgnoredScope(names=list(ignored), validate=False),
        "advanced_parameters": advanced,
    }


def quantize_model(model: Any, items: list[dict[str, Any]], config: QuantizeConfig, ignored: Sequence[str]):
    """``nncf.quantize`` on one IR with calibration ``items`` (each one inference call)."""
    _, nncf = nncf_imports()
    try:
        return nncf.quantize(model, nncf.Dataset(items), **nncf_arguments(config, ignored, len(items)))
    except Exception as e:  # NNCF raises many types; the user needs the graph and the reason
        raise ExportError(f"NNCF could not quantize {model.get_friendly_name()}: {e}") from e
