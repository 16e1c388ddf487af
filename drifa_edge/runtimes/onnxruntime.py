"""ONNX Runtime: runs the ONNX graphs of an export folder (no torch needed).

Execution providers: ``device=None`` picks CUDA when this onnxruntime build has it and
its libraries load, else CPU (with a warning); ``"cpu"``, ``"cuda[:N]"`` and
``"tensorrt[:N]"`` ask for one explicitly and fail (never fall back) when it is missing. Precision picks the folder
(``onnx/`` for fp32, ``onnx-int8/`` for int8).

MC masks are drawn inside the graph (RandomUniformLike) on every call. ONNX Runtime
seeds those ops once, when the session is created, from its process-wide seed; so
``reseed`` cannot restart the stream (``seedable = False``). Each MC session is
created under a fresh seed (or ``options.extra["seed"]`` for a repeatable stream),
so two runtimes in one process, e.g. ensemble members, never share masks.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from drifa_edge.artifact import layout
from drifa_edge.errors import (
    ArtifactError,
    BadInputError,
    UnsupportedBackendError,
    missing_dependency,
    suggest,
)
from drifa_edge.runtimes.base import RuntimeOptions
from drifa_edge.runtimes.threads import onnxruntime_session_entries

log = logging.getLogger(__name__)

CARD_METADATA_KEY = "drifa_edge.model_card"
# user device name -> execution providers in order of preference (CPU last, as the fallback
# for the few nodes an accelerator EP does not take)
_PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


def probe() -> dict[str, Any]:
    try:
        import onnxruntime as ort
    except ImportError:  # not installed, or installed but broken (the message quotes the real error)
        return {"available": False, "reason": str(missing_dependency("onnxruntime", "onnx"))}
    providers = [p for p in ort.get_available_providers() if p != "AzureExecutionProvider"]
    return {
        "available": True,
        "version": ort.__version__,
        "devices": providers,
        "note": f"build device {ort.get_device()}; choose with --device cpu|cuda[:N]|tensorrt[:N]",
    }


def _providers(device: str | None, available: list[str]) -> tuple[str, list]:
    """(device label, provider list for InferenceSession)."""
    if device is None:
        device = "cuda" if "CUDAExecutionProvider" in available else "cpu"
    kind, _, index = device.lower().partition(":")
    if kind not in _PROVIDERS or (index and not index.isdigit()):
        raise UnsupportedBackendError(
            f"onnxruntime device {device!r} is unknown; use cpu, cuda[:N] or tensorrt[:N]"
            + suggest(kind, _PROVIDERS)
        )
    wanted = _PROVIDERS[kind]
    if wanted[0] not in available:
        raise UnsupportedBackendError(
            f"onnxruntime here has no {wanted[0]} (available: {available}); install an onnxruntime "
            "build with it (e.g. onnxruntime-gpu) or use --device cpu"
        )
    if kind == "cpu":
        return "cpu", wanted
    device_id = int(index or 0)
    return f"{kind}:{device_id}", [
        (p, {"device_id": device_id}) if p != "CPUExecutionProvider" else p for p in wanted if p in available
    ]


class OnnxRuntime:
    name = "onnxruntime"
    seedable = False  # masks are seeded at session creation, see the module docstring

    def __init__(self, root: Path, options: RuntimeOptions) -> None:
        import onnxruntime as ort

        self._ort = ort
        self.root = root
        self.precision = options.precision
        self.mode = options.extra.get("dropout", "mc")
        self._seed = options.extra.get("seed")
        suffix = layout.suffix_graph(self.mode)
        self._files = {g: layout.onnx_file(g, options.precision) for g in layout.GRAPHS}
        self.card = layout.verified_card(root, [self._files["prefix"], self._files[suffix]])
        self._auto_device = options.device is None
        self.device, self._provider_list = _providers(options.device, ort.get_available_providers())
        self._session_options = ort.SessionOptions()
        self._session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session_options.inter_op_num_threads = 1
        if options.threads:
            self._session_options.intra_op_num_threads = int(options.threads)
        for key, value in onnxruntime_session_entries().items():  # passive waiting (runtimes.threads)
            self._session_options.add_session_config_entry(key, value)
        tasks = self.card.task_names
        self._images = [layout.image_name(t) for t in tasks]
        self._features = [layout.feature_name(t) for t in tasks]
        self._logits = [layout.logits_name(t) for t in tasks]
        self._prefix = self._session("prefix")
        self._suffix = self._session(suffix)
        self._masks = None  # suffix_masks, opened on first use

    def _session(self, graph: str):
        path = self.root / self._files[graph]
        if graph == "suffix":  # fix the in-graph RNG stream of this session
            seed = self._seed if self._seed is not None else secrets.randbelow(2**31 - 1)
            self._ort.set_seed(int(seed))
        session = self._ort.InferenceSession(str(path), self._session_options, providers=self._provider_list)
        active = session.get_providers()[0]
        wanted = self._provider_list[0]
        if active != (wanted[0] if isinstance(wanted, tuple) else wanted):
            if self._auto_device:  # CUDA was only a guess: its libraries are missing, run on the CPU
                log.warning("onnxruntime could not start %s (%s); running on the CPU", wanted, path)
                self.device, self._provider_list = "cpu", ["CPUExecutionProvider"]
                return self._session(graph)
            raise UnsupportedBackendError(
                f"{path}: onnxruntime could not start {wanted} (it runs on {active}); check the "
                "CUDA/TensorRT libraries or use --device cpu"
            )
        embedded = session.get_modelmeta().custom_metadata_map.get(CARD_METADATA_KEY)
        layout.check_embedded_card(self.card, embedded, str(path))
        return session

    def _run(self, session, outputs: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        try:
            return session.run(outputs, feeds)
        except self._ort.capi.onnxruntime_pybind11_state.InvalidArgument as e:
            raise BadInputError(f"onnxruntime rejected the input: {e}") from e

    def run_prefix(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        if len(images) != len(self._images):
            raise BadInputError(f"expected {len(self._images)} image arrays, got {len(images)}")
        feeds = {
            n: np.ascontiguousarray(x, dtype=np.float32) for n, x in zip(self._images, images, strict=True)
        }
        return self._run(self._prefix, self._features, feeds)

    def run_suffix(
        self, features: Sequence[np.ndarray], uniforms: Sequence[np.ndarray] | None = None
    ) -> list[np.ndarray]:
        if len(features) != len(self._features):
            raise BadInputError(f"expected {len(self._features)} feature arrays, got {len(features)}")
        feeds = {
            n: np.ascontiguousarray(f, dtype=np.float32)
            for n, f in zip(self._features, features, strict=True)
        }
        if uniforms is None:
            return self._run(self._suffix, self._logits, feeds)
        if self._masks is None:
            layout.verified_card(self.root, [self._files["suffix_masks"]])
            self._masks = self._session("suffix_masks")
        checked = layout.check_uniforms(self.card, uniforms, features[0].shape[0])
        feeds.update({layout.uniform_name(i): u for i, u in enumerate(checked)})
        return self._run(self._masks, self._logits, feeds)

    @property
    def has_embedding(self) -> bool:
        """Whether the suffix graph returns the pooled embedding (the OOD score's features)."""
        return layout.EMBEDDING_NAME in {o.name for o in self._suffix.get_outputs()}

    def run_suffix_embedding(self, features: Sequence[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
        """The MC suffix: (logits per task (N, K_t), pooled embedding (N, M*W3))."""
        if not self.has_embedding:
            raise ArtifactError(layout.no_embedding_message(self.root))
        if len(features) != len(self._features):
            raise BadInputError(f"expected {len(self._features)} feature arrays, got {len(features)}")
        feeds = {
            n: np.ascontiguousarray(f, dtype=np.float32)
            for n, f in zip(self._features, features, strict=True)
        }
        *logits, embedding = self._run(self._suffix, [*self._logits, layout.EMBEDDING_NAME], feeds)
        return logits, embedding

    def reseed(self, seed: int | None) -> None:
        """No-op: the in-graph RNG is seeded when the session is created."""

    def close(self) -> None:
        self._prefix = self._suffix = self._masks = None


def open_runtime(path: Path, options: RuntimeOptions) -> OnnxRuntime:
    try:
        import onnxruntime  # noqa: F401
    except ImportError as e:
        raise missing_dependency("onnxruntime", "onnx") from e
    if options.precision == "bf16":
        raise UnsupportedBackendError(
            "onnxruntime runs fp32 or int8 exports; use --runtime openvino for bf16"
        )
    return OnnxRuntime(Path(path), options)
