"""Quantization configuration (pure data, no heavy import).

One frozen :class:`QuantizeConfig` describes an INT8 build: which backend and
tool, which calibration subset, which part of the graph stays in float (the
*scope policy*) and NNCF's knobs. It is saved in the model card's
``export.int8`` section together with the calibration provenance, so a rebuild
with other data or other settings never reuses a stale result.

Scope policies (the MC-mask subgraph is kept in float by every one of them):

- ``all``: everything NNCF would quantize (attention gates, pooling, the
  residual adds, the dense layers).
- ``conv-matmul``: only the inputs of Convolution and MatMul are quantized.
- ``attention-fp32``: only the inputs of Convolutions whose input is a spatial
  feature map; the sigmoid attention arithmetic, the pooling, every dense layer
  and the 1x1 convolutions on pooled (B, C, 1, 1) vectors stay float.
- ``sensitivity``: a policy plus the ops that NNCF's accuracy control, driven by
  the MC drift metric, had to revert (:mod:`drifa_edge.quantize.accuracy_control`),
  given in ``keep_float``.

Why the defaults (``benchmarks/int8_levers.py``, real-data model on skin_isic9 +
blood_pbc8, T = 30, OpenVINO): NNCF's own defaults moved the MC predictive
distribution 3-11x the FP32-vs-FP32 noise. The drift came from three settings,
not from quantizing the attention arithmetic: (1) ranges averaged over
calibration batches ("mean-minmax") clip the tails that the MC masks' 1/(1-p)
scaling creates - plain min/max ranges fix it; (2) fast bias correction, fed
MC-masked statistics, shifted biases (17x more paired KL on blood) - off; (3) the
quantized prefix (stem + first block) - kept FP32, which costs little since it
runs once per case, not T times. With those three, the quantization's own KL
(same masks for FP32 and INT8) is a few percent of the noise floor even with
``all``, the fastest scope, so ``all`` is the default. Masks stay on during
calibration: with masks off the KL was 3-6x larger.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from drifa_edge.errors import ConfigError, suggest

BACKENDS = ("openvino", "onnx")
METHODS = {"openvino": ("nncf",), "onnx": ("ort", "nncf")}
PRESETS = ("performance", "mixed")
SCOPE_POLICIES = ("all", "conv-matmul", "attention-fp32", "sensitivity")
# OpenVINO: "all" passed the drift gate once ranges, bias correction and the prefix were
# right (see above). ONNX Runtime calibrates every tensor it quantizes: with "all" that took
# ~4 min on the real-data model against 30 s, and its conv-only build is the one measured.
DEFAULT_SCOPE = {"openvino": "all", "onnx": "attention-fp32"}
BIAS_CORRECTIONS = ("fast", "full", "none")
RANGE_ESTIMATORS = ("mean-minmax", "minmax")
ORT_FORMATS = ("qdq", "qoperator")


def _choose(value: str, choices: tuple[str, ...] | list[str], what: str) -> None:
    if value not in choices:
        raise ConfigError(
            f"unknown {what} {value!r}; choose one of {list(choices)}" + suggest(value, choices)
        )


@dataclass(frozen=True)
class QuantizeConfig:
    backend: str = "openvino"
    method: str = "nncf"  # onnx: "ort" (onnxruntime's static quantization, the faster) or "nncf"
    preset: str = "performance"  # NNCF: symmetric activations; "mixed" = asymmetric activations
    subset: int = 300  # calibration cases drawn (seeded) from the calibration data
    seed: int = 0
    split: str = "train"  # the split the calibration cases come from
    masks_on_during_calibration: bool = True  # suffix statistics under MC masks (as at inference)
    rows_per_case: int = 30  # suffix rows per calibration case (the case tiled, one fresh mask each)
    scope: str | None = None  # None: the backend's default (DEFAULT_SCOPE)
    keep_float: tuple[str, ...] = ()  # extra graph node names kept float (the sensitivity policy's list)
    quantize_prefix: bool = False  # the prefix runs once per case, not T times: FP32 costs little
    per_channel: bool = True  # per-output-channel weight scales
    bias_correction: str = "none"  # NNCF's fast bias correction, fed MC-masked statistics, adds drift
    range_estimator: str = "minmax"  # NNCF's default "mean-minmax" clips the MC-scaled tails
    max_drop: float | None = None  # accuracy-controlled mode: largest accepted accuracy drop (absolute)
    model_type: str | None = None  # NNCF ModelType ("transformer") or None
    ort_format: str = "qdq"  # onnx + ort: QDQ pairs or QOperator (QLinearConv ...)

    def __post_init__(self) -> None:
        _choose(self.backend, BACKENDS, "quantization backend")
        if self.scope is None:
            object.__setattr__(self, "scope", DEFAULT_SCOPE[self.backend])
        _choose(self.method, METHODS[self.backend], f"quantization method for {self.backend}")
        _choose(self.preset, PRESETS, "NNCF preset")
        _choose(self.scope, SCOPE_POLICIES, "ignored-scope policy")
        _choose(self.bias_correction, BIAS_CORRECTIONS, "bias correction")
        _choose(self.range_estimator, RANGE_ESTIMATORS, "range estimator")
        _choose(self.ort_format, ORT_FORMATS, "ONNX Runtime quantization format")
        if self.split not in ("train", "val", "test"):
            raise ConfigError(f"calibration split must be train, val or test, got {self.split!r}")
        if self.subset < 1:
            raise ConfigError(f"--subset must be >= 1 calibration case, got {self.subset}")
        if not 1 <= self.rows_per_case <= 512:
            raise ConfigError(f"rows_per_case must be in [1, 512], got {self.rows_per_case}")
        if self.max_drop is not None and not 0.0 <= self.max_drop < 1.0:
            raise ConfigError(f"--max-drop is an absolute accuracy drop in [0, 1), got {self.max_drop}")
        if self.model_type not in (None, "transformer"):
            raise ConfigError(f"model_type must be None or 'transformer', got {self.model_type!r}")
        if self.scope == "sensitivity" and not self.keep_float:
            raise ConfigError(
                "scope 'sensitivity' needs the node names to keep float (keep_float); "
                "run drifa_edge.quantize.accuracy_control.restore_keep_float or pick another scope"
            )
        if self.backend == "onnx" and not self.masks_on_during_calibration:
            raise ConfigError(
                "masks-off calibration is built for OpenVINO only (ranges copied from the deterministic "
                "graph); ONNX INT8 calibrates the MC graphs with masks on"
            )
        if self.backend == "onnx" and self.method == "ort" and self.max_drop is not None:
            raise ConfigError("--max-drop (accuracy control) needs NNCF; use --openvino --int8 --max-drop")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["keep_float"] = list(self.keep_float)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QuantizeConfig:
        """From a card, a profile or ``--int8-set``: unknown keys and wrong types are refused."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(d) - set(fields)
        if unknown:
            raise ConfigError(
                f"unknown quantization config keys {sorted(unknown)}; known: {sorted(fields)}"
                + suggest(sorted(unknown)[0], list(fields))
            )
        d = dict(d)
        if "keep_float" in d:
            d["keep_float"] = tuple(d["keep_float"])
        for key, value in d.items():
            if value is None:
                continue
            kind = type(getattr(cls(), key))
            if kind is type(None):  # optional fields: float (max_drop) or str (scope, model_type)
                kind = float if key == "max_drop" else str
            ok = (
                isinstance(value, (int, float)) and not isinstance(value, bool)
                if kind is float
                else isinstance(value, kind) and not (kind is int and isinstance(value, bool))
            )
            if not ok:
                raise ConfigError(
                    f"quantization setting {key} must be {kind.__name__}, got {value!r} ({type(value).__name__})"
                )
        return cls(**d)

    def replace(self, **changes: Any) -> QuantizeConfig:
        return dataclasses.replace(self, **changes)
