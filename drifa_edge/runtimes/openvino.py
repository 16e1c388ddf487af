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
with every thread, on CPU also compiled for its row count (a dynamic graph sets up each new
shape on its first call, which a warm model cache cannot save); ``extra["static_shapes"] =
False`` keeps dynamic shapes. Static graphs are made for the first :data:`STATIC_ROW_COUNTS`
row counts a runtime meets (``compile_for`` while opening counts) and kept; any other row count
runs on one dynamic graph compiled with the same streams. Varying row counts (adaptive T, a
batch's last call) so never recompile: with an evicting cache of 8 row counts, adaptive T on
the real-data model spent most of its time compiling (107-124 ms per case against 15.5 ms
at fixed T in one batch of 60 cases; a compile on the p99 of single cases). The prefix (one row per case), calls of a single suffix row
and the fixed-mask graph run as one request with every thread (dynamic shapes).

Threads: ``INFERENCE_NUM_THREADS`` from ``options.threads`` and no pinning to cores
(:mod:`drifa_edge.runtimes.threads`). Memory (paper configuration, INT8, one case): each
stream holds its own instance of the compiled suffix. Most of an instance was the JIT code
of OpenVINO's *Snippets* (the CPU plugin fuses each chain of elementwise ops, DRIFA-Net's
~280 sigmoid/scale/add gates, into one generated kernel per node and per stream). On CPU
they are off by default (``SNIPPETS_MODE = DISABLE``, a CPU-plugin property of
``ov::intel_cpu``, not listed in SUPPORTED_PROPERTIES): the same ops then run as OpenVINO's
ordinary eltwise nodes (fused into the convolutions where it can). Measured on the paper
configuration's INT8 build, 2 streams, warm cache: peak RSS of a one-case predict 591 ->
461 MB, per case 1-3 % slower (FP32 unchanged). ``extra["snippets"] = "enable"`` keeps
OpenVINO's default. An OpenVINO that refuses the property compiles without it (logged).

MC masks are drawn in-graph (RandomUniform with zero seeds: a fresh stream for every
compiled model, new values on every call); ``reseed`` cannot restart it (``seedable = False``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from drifa_edge.artifact import layout
from drifa_edge.errors import (
    ArtifactError,
    BadInputError,
    ConfigError,
    UnsupportedBackendError,
    missing_dependency,
)
from drifa_edge.runtimes.base import RuntimeOptions
from drifa_edge.runtimes.model_cache import build_cache_dir
from drifa_edge.runtimes.threads import openvino_properties

log = logging.getLogger(__name__)

RT_INFO_CARD = ["drifa_edge", "model_card"]
_PRECISION_HINT = {"fp32": "f32", "int8": "f32", "bf16": "bf16", "fp16": "f16"}
_VIRTUAL_DEVICES = ("AUTO", "HETERO", "MULTI", "BATCH")
_AUTO_STREAMS_MAX = 4
SNIPPETS = ("disable", "enable")  # options.extra["snippets"] on CPU; see the module docstring
_SNIPPETS_KEY = "SNIPPETS_MODE"
STATIC_ROW_COUNTS = 3  # row counts per part that get a static graph; others: one dynamic graph


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
        supported = set(config)
    config = {k: v for k, v in config.items() if k in supported}
    snippets = str(options.extra.get("snippets", "disable")).lower()
    if snippets not in SNIPPETS:
        raise ConfigError(f"OpenVINO option snippets must be one of {SNIPPETS}, got {snippets!r}")
    if device == "CPU" and snippets == "disable":  # plugin property, absent from SUPPORTED_PROPERTIES
        config[_SNIPPETS_KEY] = "DISABLE"
    return config


def compile_with_fallback(core, target, device: str, config: dict[str, str]):
    """``core.compile_model(target, device, config)``; an OpenVINO that rejects
    ``SNIPPETS_MODE`` (a plugin property that may be renamed) compiles without it, with a
    warning. Other errors propagate (RuntimeError)."""
    try:
        return core.compile_model(target, device, config)
    except RuntimeError as e:
        if _SNIPPETS_KEY not in config or _SNIPPETS_KEY not in str(e):
            raise
        log.warning(
            "OpenVINO %s: %s not accepted (%s); compiling with OpenVINO's default", device, _SNIPPETS_KEY, e
        )
        return core.compile_model(target, device, {k: v for k, v in config.items() if k != _SNIPPETS_KEY})


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
        # static shapes: every call of n > 1 rows runs a graph compiled for its rows per request,
        # also with one stream on CPU (no per-shape set-up on a dynamic graph's first call)
        self._static = bool(options.extra.get("static_shapes", True)) and (
            self.streams > 1 or self.device == "CPU"
        )
        self._stream_config = _compile_config(self._core, self.device, options, self.streams)
        self._parts: dict[int | None, tuple[Any, list[Any]]] = {}  # rows per part -> compiled, requests
        self._single = None  # the MC suffix as one dynamic request with every thread
        tasks = self.card.task_names
        self._images = [layout.image_name(t) for t in tasks]
        self._features = [layout.feature_name(t) for t in tasks]
        self._logits = [layout.logits_name(t) for t in tasks]
        self._suffix_graph = suffix
        self._suffix_model = None  # the ov.Model, read when a compile needs it (not on a cache hit)
        self._has_embedding: bool | None = None
        self._prefix = self._compile("prefix")
        if self.cache_dir is None:
            self._suffix_model = self._read(suffix)  # compiled per row count (streams) or as one request
        else:  # a warm cache compiles from the file without reading the graph: check its card here
            self._check_card_in_file(suffix)
        if self.streams == 1 and not self._static:
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
            return compile_with_fallback(self._core, model, self.device, config)
        except RuntimeError as e:
            raise UnsupportedBackendError(f"{xml}: OpenVINO could not compile for {self.device}: {e}") from e

    def _check_card_in_file(self, graph: str) -> None:
        xml = self.root / self._files[graph][0]
        layout.check_embedded_card(self.card, embedded_card_in_ir(xml), str(xml))

    def _compile_file(self, xml: Path, config: dict[str, str]):
        """Compile an IR by path: with CACHE_DIR set OpenVINO then keys the blob by the path
        (inside this build's own cache folder) and, on a hit, never reads the graph."""
        try:
            return compile_with_fallback(self._core, str(xml), self.device, config)
        except RuntimeError as e:
            raise UnsupportedBackendError(f"{xml}: OpenVINO could not compile for {self.device}: {e}") from e

    def _suffix(self):
        if self._suffix_model is None:
            self._suffix_model = self._read(self._suffix_graph)
        return self._suffix_model

    def _compile(self, graph: str):
        if self.cache_dir is not None:
            self._check_card_in_file(graph)
            compiled = self._compile_file(self.root / self._files[graph][0], self._config)
        else:
            model, xml = self._read(graph)
            compiled = self._compile_model(model, xml, self._config)
        return compiled, compiled.create_infer_request()

    def _static_ir(self, rows: int) -> Path | None:
        """The MC suffix reshaped to ``rows`` rows, saved once as IR in this build's cache folder
        (so later starts compile it from the file); None when it cannot be written."""
        path = self.cache_dir / f"{self._suffix_graph}-{rows}rows.xml"
        if path.is_file() and path.with_suffix(".bin").is_file():
            return path
        import openvino as ov

        model = self._reshaped(rows)
        tmp = path.with_name(f".{path.stem}-{os.getpid()}.xml")
        try:
            ov.save_model(model, str(tmp), compress_to_fp16=False)
            os.replace(tmp.with_suffix(".bin"), path.with_suffix(".bin"))
            os.replace(tmp, path)  # the .xml last: a half-written pair is never used
        except (OSError, RuntimeError) as e:
            log.warning("OpenVINO cache: could not save %s (%s); compiling without it", path, e)
            return None
        finally:
            self._suffix_model = None  # compiled from the file from now on: free the graph
        return path

    def _reshaped(self, rows: int):
        model, _ = self._suffix()
        model = model.clone()
        model.reshape(
            {p.get_any_name(): [rows, *(d.get_length() for d in p.get_partial_shape()[1:])]
             for p in model.inputs}
        )  # fmt: skip
        return model

    def _single_request(self):
        """The MC suffix as one dynamic request with every thread: ``streams=1``, or a call of
        a single row (one stream's share of the threads would be slower)."""
        if self._single is None:
            if self.cache_dir is not None:
                compiled = self._compile_file(self.root / self._files[self._suffix_graph][0], self._config)
            else:
                model, xml = self._suffix()
                compiled = self._compile_model(model, xml, self._config)
            self._single = (compiled, compiled.create_infer_request())
        return self._single

    def _suffix_part(self, rows: int) -> tuple[Any, list[Any]]:
        """The MC suffix compiled for ``rows`` rows per request (static: the first
        :data:`STATIC_ROW_COUNTS` row counts met), else the dynamic graph; compiled once each."""
        static_counts = sum(1 for k in self._parts if k is not None)
        key = rows if self._static and (rows in self._parts or static_counts < STATIC_ROW_COUNTS) else None
        if key not in self._parts:
            static = key is not None
            saved = self._static_ir(rows) if static and self.cache_dir is not None else None
            if saved is not None:
                compiled = self._compile_file(saved, self._stream_config)
            elif self.cache_dir is not None and not static:
                compiled = self._compile_file(
                    self.root / self._files[self._suffix_graph][0], self._stream_config
                )
            else:
                model, xml = self._suffix()
                model = self._reshaped(rows) if static else model
                compiled = self._compile_model(model, xml, self._stream_config)
            self._parts[key] = (compiled, [compiled.create_infer_request() for _ in range(self.streams)])
        return self._parts[key]

    def _run_streams(
        self, features: Sequence[np.ndarray], outputs: list[str] | None = None
    ) -> list[np.ndarray]:
        """The MC suffix over parallel requests: rows split in equal parts, the last padded."""
        n = int(features[0].shape[0])
        parts, rows = split_rows(n, self.streams)
        compiled, requests = self._suffix_part(rows)
        static = compiled.input(0).get_partial_shape().is_static
        arrays = []
        for f in features:
            a = np.ascontiguousarray(f, dtype=np.float32)
            if static and parts * rows > n:  # padding rows: computed, then dropped
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
            if self._partitioned(int(features[0].shape[0])):
                return self._run_streams(features)
            return self._run(self._single_request(), self._features, features, self._logits)
        if self._masks is None:
            layout.verified_card(self.root, list(self._files["suffix_masks"]))
            self._masks = self._compile("suffix_masks")
        checked = layout.check_uniforms(self.card, uniforms, features[0].shape[0])
        names = self._features + [layout.uniform_name(i) for i in range(len(checked))]
        return self._run(self._masks, names, [*features, *checked], self._logits)

    @property
    def has_embedding(self) -> bool:
        """Whether the suffix graph returns the pooled embedding (the OOD score's features)."""
        if self._has_embedding is None:  # read once and dropped: a warm cache never keeps the graph
            model, _ = (
                self._suffix_model if self._suffix_model is not None else self._read(self._suffix_graph)
            )
            self._has_embedding = any(layout.EMBEDDING_NAME in o.get_names() for o in model.outputs)
        return self._has_embedding

    def _partitioned(self, rows: int) -> bool:
        """Whether a call of ``rows`` rows runs on the per-row-count graphs (streams or static
        shapes) rather than the one dynamic request (a single row, or static shapes off)."""
        return split_rows(rows, self.streams)[0] > 1 or (self._static and rows > 1)

    def compile_for(self, rows: int) -> None:
        """Compile the MC suffix for calls of ``rows`` rows now (while opening) instead of on the
        first call; with a warm model cache this only loads the blob."""
        if self._partitioned(int(rows)):
            self._suffix_part(split_rows(int(rows), self.streams)[1])
        else:
            self._single_request()

    def run_suffix_embedding(self, features: Sequence[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
        """The MC suffix: (logits per task (N, K_t), pooled embedding (N, M*W3))."""
        if len(features) != len(self._features):
            raise BadInputError(f"expected {len(self._features)} feature arrays, got {len(features)}")
        n = int(features[0].shape[0])
        partitioned = self._partitioned(n)
        compiled = (
            self._suffix_part(split_rows(n, self.streams)[1])[0] if partitioned else self._single_request()[0]
        )
        if not any(layout.EMBEDDING_NAME in o.get_names() for o in compiled.outputs):
            raise ArtifactError(layout.no_embedding_message(self.root))
        outputs = [*self._logits, layout.EMBEDDING_NAME]
        if partitioned:
            *logits, embedding = self._run_streams(features, outputs)
        else:
            *logits, embedding = self._run(self._single_request(), self._features, features, outputs)
        return logits, embedding

    def reseed(self, seed: int | None) -> None:
        """No-op: OpenVINO's in-graph RNG cannot be restarted."""

    def close(self) -> None:
        self._prefix = self._masks = None
        self._parts, self._single = {}, None


def embedded_card_in_ir(xml: Path) -> str | None:
    """The model card embedded in an IR file's rt_info (``RT_INFO_CARD``), read from the XML
    text without building the graph; None when absent."""
    import xml.etree.ElementTree as ET

    try:
        text = xml.read_text(encoding="utf-8")
    except OSError as e:
        raise ArtifactError(f"{xml}: cannot read ({e})") from e
    start, end = text.rfind("<rt_info>"), text.rfind("</rt_info>")
    if start < 0 or end < start:
        return None
    try:  # the graph-level rt_info is the last one, at the end of the file (its sha256 is checked)
        node = ET.fromstring(text[start : end + len("</rt_info>")])
    except ET.ParseError as e:
        raise ArtifactError(f"{xml}: the model's rt_info is not valid XML ({e}); re-export it") from e
    found = node.find("/".join(RT_INFO_CARD))
    return None if found is None else found.get("value")


def open_runtime(path: Path, options: RuntimeOptions) -> OpenVinoRuntime:
    try:
        import openvino  # noqa: F401
    except ImportError as e:
        raise missing_dependency("openvino", "openvino") from e
    return OpenVinoRuntime(Path(path), options)
