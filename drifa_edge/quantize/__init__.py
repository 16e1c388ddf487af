"""INT8 builds of an export folder, with DRIFA-Net's MC dropout kept stochastic.

- :mod:`.config`: :class:`~.config.QuantizeConfig`, the one frozen configuration.
- :mod:`.calibration_set`: calibration cases from real images + their provenance.
- :mod:`.scopes`: which nodes stay float (the MC-mask chain always; policies).
- :mod:`.build`: build key, reuse and card record, shared by both backends.
- :mod:`.nncf`: OpenVINO IR with NNCF (``openvino-int8/``), accuracy control via ``max_drop``.
- :mod:`.accuracy_control`: revert the most harmful layers until a metric fits.
- :mod:`.onnxrt`: ONNX Runtime static quantization or NNCF-ONNX (``onnx-int8/``).
- :mod:`.ir`: OpenVINO graph helpers (FP32 compile, fixed seeds, graph surgery).
- :mod:`.tensorrt_qdq`: explicit Q/DQ graphs for TensorRT.

Heavy imports (openvino, nncf, onnxruntime) happen inside those modules.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

# (backend, method) -> "module:function(export_dir, calib_values, config)"
QUANTIZERS = {
    ("openvino", "nncf"): "drifa_edge.quantize.nncf:quantize_openvino",
    ("onnx", "ort"): "drifa_edge.quantize.onnxrt:quantize_onnx",
    ("onnx", "nncf"): "drifa_edge.quantize.onnxrt:quantize_onnx",
}


def quantize_export(export_dir: str | Path, calib_values: list[str], config: Any) -> dict[str, Any]:
    """Build (or reuse) the INT8 folder ``config`` asks for; returns its card section."""
    module_name, func = QUANTIZERS[(config.backend, config.method)].split(":")
    return getattr(importlib.import_module(module_name), func)(export_dir, calib_values, config)
