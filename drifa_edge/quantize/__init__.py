"""INT8 builds of an export folder, with DRIFA-Net's MC dropout kept stochastic.

- :mod:`.config`: :class:`~.config.QuantizeConfig`, the one frozen configuration.
- :mod:`.calibration_set`: calibration cases from real images + their provenance.
- :mod:`.scopes`: which nodes stay float (the MC-mask chain always; policies).
- :mod:`.build`: build key, reuse and card record, shared by both backends.
- :mod:`.nncf_api`: the NNCF calls (import, ``nncf.quantize`` arguments, one graph).
- :mod:`.nncf`: OpenVINO IR with NNCF (``openvino-int8/``), accuracy control via ``max_drop``.
- :mod:`.accuracy_control`: revert the most harmful layers until a metric fits.
- :mod:`.onnxrt`: ONNX Runtime static quantization or NNCF-ONNX (``onnx-int8/``).
- :mod:`.ir`: OpenVINO graph helpers (FP32 compile, fixed seeds, graph surgery).
- :mod:`.tensorrt_qdq`: explicit Q/DQ graphs for TensorRT.

Heavy imports (openvino, nncf, onnxruntime) happen inside those modules.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from drifa_edge.errors import ConfigError, suggest

# (backend, method) -> "module:function(export_dir, calib_values, config)", the INT8 builders
QUANTIZERS = {
    ("openvino", "nncf"): "drifa_edge.quantize.nncf:quantize_openvino",
    ("onnx", "ort"): "drifa_edge.quantize.onnxrt:quantize_onnx",
    ("onnx", "nncf"): "drifa_edge.quantize.onnxrt:quantize_onnx",
}
# ``drifa-edge export --int8-backend``: the builds each choice makes, with their (backend, method)
INT8_BACKENDS = {
    "openvino": (("openvino", "nncf"),),
    "onnx": (("onnx", "ort"),),
    "both": (("openvino", "nncf"), ("onnx", "ort")),
}


def quantizer(backend: str, method: str) -> Callable[..., dict[str, Any]]:
    """The builder of one (backend, method) from :data:`QUANTIZERS` (imports its backend)."""
    module_name, func = QUANTIZERS[(backend, method)].split(":")
    return getattr(importlib.import_module(module_name), func)


def quantize_int8(
    export_dir: str | Path,
    calib_values: Sequence[str],
    backend: str = "openvino",
    *,
    subset: int = 300,
    scope: str | None = None,
    max_drop: float | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """INT8 builds of an export folder (every ensemble member), as ``drifa-edge export --int8``:
    ``backend`` "openvino" (NNCF), "onnx" (ONNX Runtime static quantization) or "both".
    ``max_drop`` (NNCF accuracy control) applies to the OpenVINO build; ``overrides`` are
    other :class:`~drifa_edge.quantize.config.QuantizeConfig` fields. Returns backend -> card section."""
    from drifa_edge.quantize.config import QuantizeConfig

    if backend not in INT8_BACKENDS:
        raise ConfigError(
            f"--int8-backend must be openvino, onnx or both, got {backend!r}"
            + suggest(backend, INT8_BACKENDS)
        )
    if max_drop is not None and backend == "onnx":
        raise ConfigError("--max-drop (accuracy control) needs NNCF: use --int8-backend openvino or both")
    common = {**(overrides or {}), "subset": subset, "scope": scope}
    summary = {}
    for name, method in INT8_BACKENDS[backend]:
        extra = {"max_drop": max_drop} if name == "openvino" else {"backend": name, "method": method}
        config = QuantizeConfig.from_dict({**common, **extra})
        summary[name] = quantizer(name, method)(export_dir, calib_values, config)
    return summary
