"""OpenVINO: runs the IR graphs of an export folder (no torch needed).

Device ``CPU`` by default; ``GPU``, ``GPU.1``, ``NPU``, ``AUTO``... are passed through
to ``Core.compile_model``. ``options.hint`` becomes PERFORMANCE_HINT (latency |
throughput). Precision: fp32 and int8 compile with INFERENCE_PRECISION_HINT f32,
because OpenVINO otherwise runs bf16 on CPUs with avx512_bf16/AMX and the result no
longer matches the FP32 reference; bf16 and fp16 ask for those on purpose. int8 loads
``openvino-int8/``, the rest ``openvino/``. ``options.extra["cache_dir"]`` turns on
OpenVINO's model cache (faster cold starts). One infer request per graph is reused.

MC masks are drawn in-graph (RandomUniform with zero seeds: a fresh stream for every
compiled model, new values on every call); ``reseed`` cannot restart it (``seedable = False``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from drifa_edge.errors import BadInputError, UnsupportedBackendError, missing_dependency
from drifa_edge.export import layout
from drifa_edge.runtimes.base import RuntimeOptions

RT_INFO_CARD = ["drifa_edge", "model_card"]
_PRECISION_HINT = {"fp32": "f32", "int8": "f32", "bf16": "bf16", "fp16": "f16"}
_VIRTUAL_DEVICES = ("AUTO", "HETERO", "MULTI", "BATCH")


def probe() -> dict[str, Any]:
    try:
        import openvino as ov
    except ImportError:
        return {"available": False, "reason": "pip install 'drifa-edge[openvino]'"}
    core = ov.Core()
    devices = []
    for d in core.available_devices:
        try:
            devices.append(f"{d} ({core.get_property(d, 'FULL_DEVICE_NAME')})")
        except RuntimeError:
            devices.append(d)
    return {
        "available": True,
        "version": ov.get_version(),
        "devices": devices,
        "note": "hints: latency|throughput",
    }


def _device_name(device: str | None, available: list[str]) -> str:
    name = device or "CPU"
    if name.islower():  # "cpu", "gpu.1" are accepted for convenience
        name = name.upper()
    if name.split(":")[0].split(".")[0] in _VIRTUAL_DEVICES or name in available:
        return name
    raise UnsupportedBackendError(
        f"OpenVINO device {name!r} is not available here (available: {available}); "
        "install its driver or use --device CPU"
    )


def _compile_config(core, device: str, options: RuntimeOptions) -> dict[str, str]:
    config = {
        "PERFORMANCE_HINT": options.hint.upper(),
        "INFERENCE_PRECISION_HINT": _PRECISION_HINT[options.precision],
    }
    if options.threads:
        config["INFERENCE_NUM_THREADS"] = str(int(options.threads))
    try:  # pass only what the device understands (an NPU has no INFERENCE_NUM_THREADS)
        supported = set(core.get_property(device, "SUPPORTED_PROPERTIES"))
    except RuntimeError:
        return config
    return {k: v for k, v in config.items() if k in supported}


class OpenVinoRuntime:
    name = "openvino"
    seedable = False  # see the module docstring

    def __init__(self, root: Path, options: RuntimeOptions) -> None:
        import openvino as ov

        self.root = root
        self.precision = options.precision
        self.mode = options.extra.get("dropout", "mc")
        suffix = layout.suffix_graph(self.mode)
        self._files = {g: layout.openvino_files(g, options.precision) for g in layout.GRAPHS}
        self.card = layout.verified_card(root, [*self._files["prefix"], *self._files[suffix]])
        self._core = ov.Core()
        if options.extra.get("cache_dir"):
            self._core.set_property({"CACHE_DIR": str(options.extra["cache_dir"])})
        self.device = _device_name(options.device, self._core.available_devices)
        self._config = _compile_config(self._core, self.device, options)
        tasks = self.card.task_names
        self._images = [layout.image_name(t) for t in tasks]
        self._features = [layout.feature_name(t) for t in tasks]
        self._logits = [layout.logits_name(t) for t in tasks]
        self._prefix = self._compile("prefix")
        self._suffix = self._compile(suffix)
        self._masks = None  # suffix_masks, compiled on first use

    def _compile(self, graph: str):
        xml = self.root / self._files[graph][0]
        model = self._core.read_model(str(xml))
        embedded = model.get_rt_info(RT_INFO_CARD).astype(str) if model.has_rt_info(RT_INFO_CARD) else None
        layout.check_embedded_card(self.card, embedded, str(xml))
        try:
            compiled = self._core.compile_model(model, self.device, self._config)
        except RuntimeError as e:
            raise UnsupportedBackendError(f"{xml}: OpenVINO could not compile for {self.device}: {e}") from e
        return compiled, compiled.create_infer_request()

    def _run(
        self, graph, inputs: list[str], arrays: Sequence[np.ndarray], outputs: list[str]
    ) -> list[np.ndarray]:
        compiled, request = graph
        feeds = {n: np.ascontiguousarray(a, dtype=np.float32) for n, a in zip(inputs, arrays, strict=True)}
        try:
            result = request.infer(feeds)
        except RuntimeError as e:
            raise BadInputError(f"OpenVINO rejected the input: {e}") from e
        return [np.array(result[compiled.output(n)], dtype=np.float32) for n in outputs]

    def run_prefix(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        if len(images) != len(self._images):
            raise BadInputError(f"expected {len(self._images)} image arrays, got {len(images)}")
        return self._run(self._prefix, self._images, images, self._features)

    def run_suffix(
        self, features: Sequence[np.ndarray], uniforms: Sequence[np.ndarray] | None = None
    ) -> list[np.ndarray]:
        if len(features) != len(self._features):
            raise BadInputError(f"expected {len(self._features)} feature arrays, got {len(features)}")
        if uniforms is None:
            return self._run(self._suffix, self._features, features, self._logits)
        if self._masks is None:
            layout.verified_card(self.root, list(self._files["suffix_masks"]))
            self._masks = self._compile("suffix_masks")
        checked = layout.check_uniforms(self.card, uniforms, features[0].shape[0])
        names = self._features + [layout.uniform_name(i) for i in range(len(checked))]
        return self._run(self._masks, names, [*features, *checked], self._logits)

    def reseed(self, seed: int | None) -> None:
        """No-op: OpenVINO's in-graph RNG cannot be restarted."""

    def close(self) -> None:
        self._prefix = self._suffix = self._masks = None


def open_runtime(path: Path, options: RuntimeOptions) -> OpenVinoRuntime:
    try:
        import openvino  # noqa: F401
    except ImportError as e:
        raise missing_dependency("openvino", "openvino") from e
    return OpenVinoRuntime(Path(path), options)
