"""OpenVINO: runs the IR graphs of an export folder (no torch needed).

Device ``CPU`` by default; ``GPU``, ``GPU.1``, ``NPU``, ``AUTO``... are passed through
to ``Core.compile_model``. ``options.hint`` becomes PERFORMANCE_HINT (latency |
throughput). Precision: fp32 and int8 compile with INFERENCE_PRECISION_HINT f32,
because OpenVINO otherwise runs bf16 on CPUs with avx512_bf16/AMX and the result no
longer matches the FP32 reference; bf16 and fp16 ask for those on purpose. int8 loads
``openvino-int8/``, the rest ``openvino/``. ``options.extra["cache_dir"]`` turns on
OpenVINO's model cache in a sub-folder per build (:mod:`drifa_edge.runtimes.model_cache`;
on by default in predict and serve): a restart loads the compiled blobs instead of compiling.

Streams: on CPU the rows of one MC suffix call (the T samples of a case) are split
over ``options.streams`` parallel infer requests (OpenVINO CPU streams, the
THROUGHPUT mode), each compiled for a fixed number of rows (static shapes; the last
part is padded and the padding dropped). DRIFA-Net's suffix is thousands of small
ops (pooling, sigmoid gates, quantize/dequantize) whose per-op overhead and thread
synchronisation dominate at 30 rows; one stream per core removes most of it. Measured
on the paper configuration, T = 30, 2 cores: the INT8 suffix took 139 ms as one request,
124 ms over 2 streams and 108 ms over 2 streams with static shapes (FP32: 327 / 311 /
302 ms). Default: one stream per CPU thread, at most 4; ``streams=1`` is one request
with every thread (the dynamic-shape graph); ``extra["static_shapes"] = False`` keeps
dynamic shapes with streams. The prefix (one row per case), calls of a single suffix row
and the fixed-mask graph run as one request with every thread.

MC masks are drawn in-graph (RandomUniform with zero seeds: a fresh stream for every
compiled model, new values on every call); ``reseed`` cannot restart it (``seedable = False``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from drifa_edge.artifact import layout
from drifa_edge.errors import ArtifactError, BadInputError, UnsupportedBackendError, missing_dependency
from drifa_edge.runtimes.base import RuntimeOptions
from drifa_edge.runtimes.model_cache import build_cache_dir
from drifa_edge.runtimes.threads import openvino_properties

RT_INFO_CARD = ["drifa_edge", "model_card"]
_PRECISION_HINT = {"fp32": "f32", "int8": "f32", "bf16": "bf16", "fp16": "f16"}
_VIRTUAL_DEVICES = ("AUTO", "HETERO", "MULTI", "BATCH")
_AUTO_STREAMS_MAX = 4
_STATIC_SHAPES_KEPT = 8  # compiled row counts kept per runtime (oldest dropped first)


def probe() -> dict[str, Any]:
    try:
        import openvino as ov
    except ImportError:  # not installed, or installed but broken (the message quotes the real error)
        return {"available": False, "reason": str(missing_dependency("openvino", "openvino"))}
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


def _compile_config(core, device: str, options: RuntimeOptions, streams: int = 1) -> dict[str, str]:
    config = {
        "PERFORMANCE_HINT": options.hint.upper() if streams == 1 else "THROUGHPUT",
        "INFERENCE_PRECISION_HINT": _PRECISION_HINT[options.precision],
    }
    if streams > 1:
        config["NUM_STREAMS"] = str(streams)
    if options.threads:  # and no pinning to cores: see drifa_edge.runtimes.threads
        config.update(openvino_properties(int(options.threads)))
    try:  # pass only what the device understands (an NPU has no INFERENCE_NUM_THREADS)
        supported = set(core.get_property(device, "SUPPORTED_PROPERTIES"))
    except RuntimeError:
        return config
    return {k: v for k, v in config.items() if k in supported}


def suffix_streams(device: str, options: RuntimeOptions) -> int:
    """Parallel requests for the MC suffix: the user's choice, else one per CPU thread (<= 4)."""
    if options.streams is not None:
        return int(options.streams)
    if device != "CPU" or options.hint == "throughput":  # throughput: OpenVINO's own streams
        return 1
    return max(1, min(_AUTO_STREAMS_MAX, int(options.threads or os.cpu_count() or 1)))


def split_rows(rows: int, streams: int) -> tuple[int, int]:
    """(parts, rows per part) for one call: as many parts as streams, never an empty part."""
    parts = max(1, min(streams, rows))
    return parts, -(-rows // parts)


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
        self.cache_dir = None  # OpenVINO model cache of this build (runtimes.model_cache)
        if options.extra.get("cache_dir"):
            files = [f for g in (suffix, "prefix") for f in self._files[g]]
            self.cache_dir = build_cache_dir(options.extra["cache_dir"], self.card.files, files)
            if self.cache_dir is not None:
                self._core.set_property({"CACHE_DIR": str(self.cache_dir)})
        self.device = _device_name(options.device, self._core.available_devices)
        self._config = _compile_config(self._core, self.device, options)
        self.streams = suffix_streams(self.device, options)
        self._static = bool(options.extra.get("static_shapes", True)) and self.streams > 1
        self._stream_config = _compile_config(self._core, self.device, options, self.streams)
        self._parts: dict[int | None, tuple[Any, list[Any]]] = {}  # rows per part -> compiled, requests
        self._single = None  # the MC suffix as one dynamic request with every thread
        tasks = self.card.task_names
        self._images = [layout.image_name(t) for t in tasks]
        self._features = [layout.feature_name(t) for t in tasks]
        self._logits = [layout.logits_name(t) for t in tasks]
        self._prefix = self._compile("prefix")
        self._suffix_model = self._read(suffix)  # compiled per row count (streams) or as one request
        if self.streams == 1:
            self._single_request()
        self._masks = None  # suffix_masks, compiled on first use

    def _read(self, graph: str):
        xml = self.root / self._files[graph][0]
        model = self._core.read_model(str(xml))
        embedded = model.get_rt_info(RT_INFO_CARD).astype(str) if model.has_rt_info(RT_INFO_CARD) else None
        layout.check_embedded_card(self.card, embedded, str(xml))
        return model, xml

    def _compile_model(self, model, xml: Path, config: dict[str, str]):
        try:
            return self._core.compile_model(model, self.device, config)
        except RuntimeError as e:
            raise UnsupportedBackendError(f"{xml}: OpenVINO could not compile for {self.device}: {e}") from e

    def _compile(self, graph: str):
        model, xml = self._read(graph)
        compiled = self._compile_model(model, xml, self._config)
        return compiled, compiled.create_infer_request()

    def _single_request(self):
        """The MC suffix as one dynamic request with every thread: ``streams=1``, or a call of
        a single row (one stream's share of the threads would be slower)."""
        if self._single is None:
            model, xml = self._suffix_model
            compiled = self._compile_model(model, xml, self._config)
            self._single = (compiled, compiled.create_infer_request())
        return self._single

    def _suffix_part(self, rows: int) -> tuple[Any, list[Any]]:
        """The MC suffix compiled for ``rows`` rows per request (static), or dynamic; cached."""
        key = rows if self._static else None
        if key not in self._parts:
            model, xml = self._suffix_model
            if self._static:
                model = model.clone()
                model.reshape(
                    {p.get_any_name(): [rows, *(d.get_length() for d in p.get_partial_shape()[1:])]
                     for p in model.inputs}
                )  # fmt: skip
            compiled = self._compile_model(model, xml, self._stream_config)
            if len(self._parts) >= _STATIC_SHAPES_KEPT:
                self._parts.pop(next(iter(self._parts)))
            self._parts[key] = (compiled, [compiled.create_infer_request() for _ in range(self.streams)])
        return self._parts[key]

    def _run_streams(
        self, features: Sequence[np.ndarray], outputs: list[str] | None = None
    ) -> list[np.ndarray]:
        """The MC suffix over parallel requests: rows split in equal parts, the last padded."""
        n = int(features[0].shape[0])
        parts, rows = split_rows(n, self.streams)
        compiled, requests = self._suffix_part(rows)
        arrays = []
        for f in features:
            a = np.ascontiguousarray(f, dtype=np.float32)
            if self._static and parts * rows > n:  # padding rows: computed, then dropped
                a = np.concatenate([a, np.zeros((parts * rows - n, *a.shape[1:]), np.float32)])
            arrays.append(a)
        try:
            for i in range(parts):
                stop = min((i + 1) * rows, len(arrays[0]))
                requests[i].start_async(
                    {n_: a[i * rows : stop] for n_, a in zip(self._features, arrays, strict=True)}
                )
            for i in range(parts):
                requests[i].wait()
        except RuntimeError as e:
            raise BadInputError(f"OpenVINO rejected the input: {e}") from e
        return [
            np.concatenate(
                [np.array(requests[i].get_tensor(compiled.output(name)).data) for i in range(parts)]
            )[:n].astype(np.float32, copy=False)
            for name in outputs or self._logits
        ]

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
            if split_rows(int(features[0].shape[0]), self.streams)[0] > 1:
                return self._run_streams(features)
            return self._run(self._single_request(), self._features, features, self._logits)
        if self._masks is None:
            layout.verified_card(self.root, list(self._files["suffix_masks"]))
            self._masks = self._compile("suffix_masks")
        checked = layout.check_uniforms(self.card, uniforms, features[0].shape[0])
        names = self._features + [layout.uniform_name(i) for i in range(len(checked))]
        return self._run(self._masks, names, [*features, *checked], self._logits)

    def run_suffix_embedding(self, features: Sequence[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
        """The MC suffix: (logits per task (N, K_t), pooled embedding (N, M*W3))."""
        model, _ = self._suffix_model
        if not any(layout.EMBEDDING_NAME in o.get_names() for o in model.outputs):
            raise ArtifactError(layout.no_embedding_message(self.root))
        if len(features) != len(self._features):
            raise BadInputError(f"expected {len(self._features)} feature arrays, got {len(features)}")
        outputs = [*self._logits, layout.EMBEDDING_NAME]
        if split_rows(int(features[0].shape[0]), self.streams)[0] > 1:
            *logits, embedding = self._run_streams(features, outputs)
        else:
            *logits, embedding = self._run(self._single_request(), self._features, features, outputs)
        return logits, embedding

    def reseed(self, seed: int | None) -> None:
        """No-op: OpenVINO's in-graph RNG cannot be restarted."""

    def close(self) -> None:
        self._prefix = self._masks = None
        self._parts, self._single = {}, None


def open_runtime(path: Path, options: RuntimeOptions) -> OpenVinoRuntime:
    try:
        import openvino  # noqa: F401
    except ImportError as e:
        raise missing_dependency("openvino", "openvino") from e
    return OpenVinoRuntime(Path(path), options)
