"""TensorRT runtime: runs the engines of ``OUT/tensorrt-<target>-<precision>/`` on an NVIDIA GPU.

Opening checks, before any engine is deserialized: the card's sha256 of both
engines and of ``build.json``, and that ``build.json`` names this TensorRT
version and this GPU (engines are specific to both; a mismatch is refused with
the command that rebuilds them). Calls use one execution context per engine and
its optimization profile: rows above the profile's maximum are split over
several calls, rows below its minimum are padded (DLA profiles are static).

MC masks: with ``masks = "graph"`` (the default build) the suffix engine draws
them with TensorRT's random fill layer, which ignores ONNX seeds, so the runtime
is not seedable. A ``masks = "host"`` build takes one uniform array per dropout
as engine inputs; the runtime draws them with numpy, so it is seedable and
accepts the caller's ``uniforms``.

Device memory and streams come from cuda-python (``cuda-python``, part of the
``tensorrt`` extra) or, when that is missing, from a CUDA build of PyTorch.
Every heavy import happens when a runtime is opened, never at import time.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from drifa_edge.artifact import layout
from drifa_edge.artifact.card import ModelCard, read_card
from drifa_edge.errors import ArtifactError, MissingDependencyError, UnsupportedBackendError
from drifa_edge.runtimes.base import RuntimeOptions

log = logging.getLogger(__name__)

BUILD_FILE = layout.TENSORRT_BUILD_FILE
# Supported TensorRT majors. 10.x: weakly typed builds (precision builder flags), the
# only major on Jetson (JetPack 6 ships 10.3; 11.x does not support JetPack). 11.x:
# strongly typed only (no FP16/INT8 builder flags; precision comes from the graph).
# Both are checked against NVIDIA's real Python bindings by tests/trt/test_trt_api.py.
MIN_TENSORRT_MAJOR = 10
MAX_TENSORRT_MAJOR = 11
INSTALL_HINT = (
    "pip install 'drifa-edge[tensorrt]' on a machine with an NVIDIA GPU and driver "
    "(the tensorrt wheels come from NVIDIA's package index, pypi.nvidia.com; on Jetson use the "
    "TensorRT that JetPack installs)"
)
LIBRARY_HINT = (
    "the tensorrt Python package is installed but its libraries (libnvinfer.so.N, "
    "libnvonnxparser.so.N, libnvinfer_plugin.so.N) cannot be loaded: install the matching "
    "'tensorrt-cu12-libs' / 'tensorrt-cu13-libs' from NVIDIA's index "
    "(pip install --extra-index-url https://pypi.nvidia.com tensorrt-cu12-libs==<same version>), "
    "or on Jetson the JetPack TensorRT (apt install nvidia-tensorrt), and check LD_LIBRARY_PATH"
)


def _tensorrt_is_installed() -> bool:
    import importlib.util

    return any(importlib.util.find_spec(m) is not None for m in ("tensorrt", "tensorrt_bindings"))


def import_tensorrt():
    """``import tensorrt`` (10.x or 11.x) or a :class:`MissingDependencyError` saying what to do.

    Three cases are told apart: the package is absent (install it), the package is
    there but its shared libraries do not load (the message names the library and
    how to get it), or the major is outside MIN..MAX_TENSORRT_MAJOR.
    """
    try:
        import tensorrt as trt
    except ImportError as e:
        missing_module = isinstance(e, ModuleNotFoundError) and (e.name or "").split(".")[0] in (
            "tensorrt",
            "",
        )
        if missing_module and not _tensorrt_is_installed():
            raise MissingDependencyError(f"TensorRT is not installed; {INSTALL_HINT}") from e
        raise MissingDependencyError(f"TensorRT cannot load ({e}); {LIBRARY_HINT}") from e
    except OSError as e:  # a library found but unusable (wrong CUDA, no driver)
        raise MissingDependencyError(f"TensorRT cannot load ({e}); {LIBRARY_HINT}") from e
    version = getattr(trt, "__version__", None)
    if version is None:  # e.g. a folder named tensorrt on sys.path (a namespace package), not TensorRT
        raise MissingDependencyError(f"'import tensorrt' found {trt!r}, not NVIDIA TensorRT; {INSTALL_HINT}")
    major = tensorrt_major(version)
    if not MIN_TENSORRT_MAJOR <= major <= MAX_TENSORRT_MAJOR:
        raise MissingDependencyError(
            f"drifa-edge supports TensorRT {MIN_TENSORRT_MAJOR}.x to {MAX_TENSORRT_MAJOR}.x, found "
            f"{version}; install one of those (pip install 'tensorrt-cu12>={MIN_TENSORRT_MAJOR},"
            f"<{MAX_TENSORRT_MAJOR + 1}' from pypi.nvidia.com, or JetPack 6 on Jetson)"
        )
    return trt


def tensorrt_major(version: str) -> int:
    """The major of a TensorRT version string ("10.3.0" -> 10)."""
    try:
        return int(str(version).split(".")[0])
    except ValueError as e:
        raise MissingDependencyError(f"unreadable TensorRT version {version!r}") from e


CUDA_HINT = "pip install 'drifa-edge[tensorrt]' (cuda-python), or a CUDA build of PyTorch"


# --------------------------------------------------------------------------- CUDA helpers


class _CudaPython:
    """Device buffers and a stream through cuda-python's runtime API."""

    def __init__(self) -> None:
        try:
            from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
        except ImportError:
            from cuda import cudart  # older cuda-python; ImportError propagates when absent
        self.rt = cudart

    def _call(self, result):
        err, *rest = result
        if int(err) != 0:
            raise RuntimeError(f"CUDA error {err!r}")
        return rest[0] if len(rest) == 1 else rest

    def device_count(self) -> int:
        return int(self._call(self.rt.cudaGetDeviceCount()))

    def device_info(self, index: int) -> dict[str, Any]:
        prop = self._call(self.rt.cudaGetDeviceProperties(index))
        name = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
        return {
            "index": index,
            "name": name.rstrip("\x00"),
            "compute_capability": f"{prop.major}.{prop.minor}",
        }

    def set_device(self, index: int) -> None:
        self._call(self.rt.cudaSetDevice(index))

    def stream(self) -> tuple[Any, int]:
        s = self._call(self.rt.cudaStreamCreate())
        return s, int(s)

    def alloc(self, nbytes: int) -> tuple[Any, int]:
        ptr = self._call(self.rt.cudaMalloc(max(int(nbytes), 1)))
        return ptr, int(ptr)

    def to_device(self, buffer: tuple[Any, int], array: np.ndarray, stream: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._call(self.rt.cudaMemcpyAsync(buffer[1], array.ctypes.data, array.nbytes, kind, stream))

    def to_host(self, array: np.ndarray, buffer: tuple[Any, int], stream: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._call(self.rt.cudaMemcpyAsync(array.ctypes.data, buffer[1], array.nbytes, kind, stream))

    def synchronize(self, stream: Any) -> None:
        self._call(self.rt.cudaStreamSynchronize(stream))

    def free(self, buffer: tuple[Any, int]) -> None:
        self.rt.cudaFree(buffer[0])


class _TorchCuda:
    """The same through a CUDA build of PyTorch (byte tensors own the memory)."""

    def __init__(self) -> None:
        import torch

        if not torch.cuda.is_available():
            raise ImportError("PyTorch has no CUDA device")
        self.torch = torch

    def device_count(self) -> int:
        return int(self.torch.cuda.device_count())

    def device_info(self, index: int) -> dict[str, Any]:
        major, minor = self.torch.cuda.get_device_capability(index)
        name = self.torch.cuda.get_device_name(index)
        return {"index": index, "name": name, "compute_capability": f"{major}.{minor}"}

    def set_device(self, index: int) -> None:
        self.torch.cuda.set_device(index)

    def stream(self) -> tuple[Any, int]:
        s = self.torch.cuda.Stream()
        return s, int(s.cuda_stream)

    def alloc(self, nbytes: int) -> tuple[Any, int]:
        t = self.torch.empty(max(int(nbytes), 1), dtype=self.torch.uint8, device="cuda")
        return t, int(t.data_ptr())

    def to_device(self, buffer: tuple[Any, int], array: np.ndarray, stream: Any) -> None:
        src = self.torch.from_numpy(array.reshape(-1).view(np.uint8))
        with self.torch.cuda.stream(stream):
            buffer[0][: array.nbytes].copy_(src)

    def to_host(self, array: np.ndarray, buffer: tuple[Any, int], stream: Any) -> None:
        with self.torch.cuda.stream(stream):
            host = buffer[0][: array.nbytes].cpu()  # waits for the stream
        array.reshape(-1).view(np.uint8)[:] = host.numpy()

    def synchronize(self, stream: Any) -> None:
        stream.synchronize()

    def free(self, buffer: tuple[Any, int]) -> None:
        pass  # the tensor is released with the engine's buffer table


def _cuda():
    """cuda-python if installed, else PyTorch with CUDA, else a clear error."""
    try:
        return _CudaPython()
    except ImportError:
        pass
    try:
        return _TorchCuda()
    except ImportError as e:
        raise MissingDependencyError(f"the TensorRT runtime needs CUDA device memory: {CUDA_HINT}") from e


def cuda_device_info(index: int = 0) -> dict[str, Any]:
    """Name and compute capability of CUDA device ``index`` (recorded in build.json)."""
    cuda = _cuda()
    if index >= cuda.device_count():
        raise UnsupportedBackendError(f"no CUDA device {index}; this machine has {cuda.device_count()}")
    return cuda.device_info(index)


def probe() -> dict[str, Any]:
    try:
        trt = import_tensorrt()
    except MissingDependencyError as e:
        found = "not installed" if "not installed" in str(e) else "unusable"
        return {
            "available": False,
            "reason": f"TensorRT {found} (pip install 'drifa-edge[tensorrt]', needs an NVIDIA GPU)",
            "details": str(e),
        }
    try:
        cuda = _cuda()
        devices = [f"cuda:{i} {cuda.device_info(i)['name']}" for i in range(cuda.device_count())]
    except Exception as e:  # a driver problem must not break `drifa-edge info`
        return {"available": False, "version": str(trt.__version__), "reason": f"no usable CUDA device ({e})"}
    if not devices:
        return {"available": False, "version": str(trt.__version__), "reason": "no CUDA device"}
    return {"available": True, "version": str(trt.__version__), "devices": devices}


# --------------------------------------------------------------------------- pure helpers (CPU-testable)


def plan_chunks(rows: int, rows_min: int, rows_max: int) -> list[tuple[int, int, int]]:
    """Split ``rows`` into calls ``(start, stop, padded_rows)`` with
    ``rows_min <= padded_rows <= rows_max`` and ``stop - start <= padded_rows``."""
    if not 1 <= rows_min <= rows_max:
        raise ValueError(f"need 1 <= rows_min <= rows_max, got {rows_min}, {rows_max}")
    plan = []
    for start in range(0, rows, rows_max):
        stop = min(start + rows_max, rows)
        plan.append((start, stop, max(stop - start, rows_min)))
    return plan


def pad_rows(array: np.ndarray, rows: int) -> np.ndarray:
    """``array`` with its last row repeated up to ``rows`` rows (outputs of padded rows are dropped)."""
    if len(array) >= rows:
        return array
    return np.concatenate([array, np.repeat(array[-1:], rows - len(array), axis=0)])


def check_build(
    build: dict[str, Any], tensorrt_version: str, gpu: dict[str, Any], allow_other_gpu: bool = False
) -> None:
    """Refuse engines built by another TensorRT version or for another GPU."""
    rebuild = f"rebuild them on this machine: drifa-edge export CHECKPOINT --trt --target {build.get('target', 'TARGET')}"
    built_with = str(build.get("tensorrt"))
    if built_with != str(tensorrt_version):
        raise ArtifactError(
            f"these engines were built with TensorRT {built_with}, this machine has {tensorrt_version}; "
            f"TensorRT engines only load in the version that built them; {rebuild}"
        )
    built_gpu = build.get("gpu") or {}
    if built_gpu.get("compute_capability") != gpu.get("compute_capability"):
        raise ArtifactError(
            f"these engines were built for {built_gpu.get('name')} (compute capability "
            f"{built_gpu.get('compute_capability')}), this GPU is {gpu.get('name')} (compute capability "
            f"{gpu.get('compute_capability')}); {rebuild}"
        )
    if built_gpu.get("name") != gpu.get("name"):
        if not allow_other_gpu:
            raise ArtifactError(
                f"these engines were built on {built_gpu.get('name')}, this GPU is {gpu.get('name')} (same compute "
                f"capability); TensorRT tunes engines per GPU model. {rebuild}, or open with "
                "extra={'allow_other_gpu': True} to accept it"
            )
        log.warning("engines built on %s run on %s", built_gpu.get("name"), gpu.get("name"))


def find_engine_folder(path: str | Path, precision: str, target: str | None = None) -> tuple[Path, Path]:
    """(export folder, engine folder) for ``path``: an export folder (pick the
    ``tensorrt-*-<precision>`` build, ``target`` when there are several) or an
    engine folder itself."""
    path = Path(path)
    if (path / BUILD_FILE).is_file():
        return path.parent, path
    if target:
        folder = path / layout.tensorrt_folder(target, precision)
        if not (folder / BUILD_FILE).is_file():
            raise ArtifactError(
                f"{folder}: no TensorRT {precision} build for target {target!r}; {_available(path)}"
            )
        return path, folder
    found = sorted(p for p in path.glob(f"tensorrt-*-{precision}") if (p / BUILD_FILE).is_file())
    if not found:
        raise ArtifactError(
            f"{path}: no TensorRT {precision} engines; build them with "
            f"'drifa-edge export CHECKPOINT --trt --{precision}' on the target device. {_available(path)}"
        )
    if len(found) > 1:
        raise ArtifactError(
            f"{path}: several TensorRT {precision} builds {[p.name for p in found]}; choose one with "
            "extra={'target': NAME} (--target)"
        )
    return path, found[0]


def _available(export_dir: Path) -> str:
    builds = sorted(p.name for p in export_dir.glob("tensorrt-*") if (p / BUILD_FILE).is_file())
    return f"available builds: {builds}" if builds else "this folder has no TensorRT build"


# --------------------------------------------------------------------------- engines


class _Engine:
    """One deserialized engine, its execution context and device buffers sized for
    the profile's maximum rows."""

    def __init__(self, trt, runtime, path: Path, cuda, stream) -> None:
        self.trt, self.cuda, self.stream, self.path = trt, cuda, stream, path
        self.engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise ArtifactError(
                f"{path}: TensorRT could not deserialize this engine; rebuild it on this machine"
            )
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        mode = trt.TensorIOMode.INPUT
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == mode]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) != mode]
        profiles = {n: self.engine.get_tensor_profile_shape(n, 0) for n in self.inputs}
        self.rows_min = max(int(p[0][0]) for p in profiles.values())
        self.rows_max = min(int(p[2][0]) for p in profiles.values())
        self.context = self.engine.create_execution_context()
        self.dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        for n, p in profiles.items():
            self.context.set_input_shape(n, tuple(p[2]))
        self.buffers: dict[str, tuple[Any, int]] = {}
        for n in names:
            shape = tuple(self.context.get_tensor_shape(n))
            nbytes = int(np.prod(shape)) * self.dtypes[n].itemsize
            self.buffers[n] = cuda.alloc(nbytes)
            self.context.set_tensor_address(n, self.buffers[n][1])

    def input_shape(self, name: str) -> tuple[int, ...]:
        return tuple(int(d) for d in self.engine.get_tensor_profile_shape(name, 0)[2][1:])

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = len(next(iter(feeds.values())))
        parts: dict[str, list[np.ndarray]] = {n: [] for n in self.outputs}
        for start, stop, padded in plan_chunks(rows, self.rows_min, self.rows_max):
            for n in self.inputs:
                chunk = pad_rows(feeds[n][start:stop], padded)
                chunk = np.ascontiguousarray(chunk, dtype=self.dtypes[n])
                self.context.set_input_shape(n, chunk.shape)
                self.cuda.to_device(self.buffers[n], chunk, self.stream[0])
            if not self.context.execute_async_v3(self.stream[1]):
                raise RuntimeError(f"{self.path.name}: TensorRT execution failed")
            host = {}
            for n in self.outputs:
                host[n] = np.empty(tuple(self.context.get_tensor_shape(n)), dtype=self.dtypes[n])
                self.cuda.to_host(host[n], self.buffers[n], self.stream[0])
            self.cuda.synchronize(self.stream[0])
            for n in self.outputs:
                parts[n].append(host[n][: stop - start].astype(np.float32, copy=False))
        return {n: np.concatenate(p) for n, p in parts.items()}

    def close(self) -> None:
        for buffer in self.buffers.values():
            self.cuda.free(buffer)
        self.buffers = {}
        self.context = self.engine = None


class TensorRTRuntime:
    name = "tensorrt"

    def __init__(self, card: ModelCard, folder: Path, build: dict[str, Any], options: RuntimeOptions) -> None:
        trt = import_tensorrt()
        if options.extra.get("dropout", "mc") != "mc":
            raise UnsupportedBackendError(
                f"the TensorRT build {folder.name} holds the MC suffix only (dropout 'mc'), not "
                f"{options.extra['dropout']!r}; use --runtime onnxruntime or openvino for deterministic runs"
            )
        self.card, self.folder, self.build = card, folder, build
        self.precision = build["precision"]
        self.masks = build.get("masks", "graph")
        self.seedable = self.masks == "host"
        index = _device_index(options.device)
        self.device = f"cuda:{index}"
        self._cuda = _cuda()
        if index >= self._cuda.device_count():
            raise UnsupportedBackendError(
                f"no CUDA device {index}; this machine has {self._cuda.device_count()}"
            )
        check_build(
            build, trt.__version__, self._cuda.device_info(index), bool(options.extra.get("allow_other_gpu"))
        )
        self._cuda.set_device(index)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._trt_runtime = trt.Runtime(self._logger)
        if build["profile"]["dla_core"] >= 0:
            self._trt_runtime.DLA_core = int(build["profile"]["dla_core"])
        self._stream = self._cuda.stream()
        self.prefix = _Engine(trt, self._trt_runtime, folder / "prefix.engine", self._cuda, self._stream)
        self.suffix = _Engine(trt, self._trt_runtime, folder / "suffix.engine", self._cuda, self._stream)
        tasks = [t.name for t in card.model.tasks]
        self._images = [layout.image_name(t) for t in tasks]
        self._feats = [layout.feature_name(t) for t in tasks]
        self._logits = [layout.logits_name(t) for t in tasks]
        self._uniforms = [n for n in self.suffix.inputs if n not in self._feats]
        self._uniforms.sort(key=lambda n: int(n.rsplit("_", 1)[-1]))
        self._rng = np.random.default_rng()
        missing = [n for n in self._images if n not in self.prefix.inputs] + [
            n for n in self._feats if n not in self.suffix.inputs
        ]
        if missing:
            raise ArtifactError(
                f"{folder}: engine inputs {missing} are missing; the engines do not match the card"
            )

    def reseed(self, seed: int | None) -> None:
        if self.seedable:
            self._rng = np.random.default_rng(seed)

    def run_prefix(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        out = self.prefix.run(dict(zip(self._images, images, strict=True)))
        return [out[layout.feature_name(t.name)] for t in self.card.model.tasks]

    def run_suffix(
        self, features: Sequence[np.ndarray], uniforms: Sequence[np.ndarray] | None = None
    ) -> list[np.ndarray]:
        out = self._run_suffix(features, uniforms)
        return [out[n] for n in self._logits]

    @property
    def has_embedding(self) -> bool:
        """Whether the suffix engine returns the pooled embedding (the OOD score's features)."""
        return layout.EMBEDDING_NAME in self.suffix.outputs

    def run_suffix_embedding(self, features: Sequence[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
        """The MC suffix: (logits per task (N, K_t), pooled embedding (N, M*W3)), for the OOD
        score. Engines built from an export whose suffix graph has the ``embedding`` output
        return it; older ones raise ArtifactError naming the fix (re-export, rebuild)."""
        if not self.has_embedding:
            raise ArtifactError(
                f"{layout.no_embedding_message(self.folder)}; then rebuild the TensorRT engines"
            )
        out = self._run_suffix(features, None)
        return [out[n] for n in self._logits], out[layout.EMBEDDING_NAME]

    def _run_suffix(
        self, features: Sequence[np.ndarray], uniforms: Sequence[np.ndarray] | None
    ) -> dict[str, np.ndarray]:
        feeds = dict(zip(self._feats, features, strict=True))
        rows = len(features[0])
        if self.masks == "graph":
            if uniforms is not None:
                raise UnsupportedBackendError(
                    f"{self.folder.name} draws its MC masks inside the engine; external uniforms need "
                    "an engine built with export_tensorrt(..., masks='host')"
                )
        else:
            if uniforms is None:
                uniforms = [
                    self._rng.random((rows, *self.suffix.input_shape(n)), dtype=np.float32)
                    for n in self._uniforms
                ]
            if len(uniforms) != len(self._uniforms):
                raise ValueError(f"need {len(self._uniforms)} uniform arrays, got {len(uniforms)}")
            feeds.update(zip(self._uniforms, uniforms, strict=True))
        return self.suffix.run(feeds)

    def close(self) -> None:
        for engine in (getattr(self, "prefix", None), getattr(self, "suffix", None)):
            if engine is not None:
                engine.close()
        self.prefix = self.suffix = None


def _device_index(device: str | None) -> int:
    if device in (None, "", "cuda", "gpu", "GPU"):
        return 0
    if device.startswith("cuda:") and device[5:].isdigit():
        return int(device[5:])
    raise UnsupportedBackendError(f"the TensorRT runtime runs on 'cuda' or 'cuda:N', got device {device!r}")


def read_build(folder: Path) -> dict[str, Any]:
    path = folder / BUILD_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{path}: unreadable build record ({e}); rebuild the engines") from e


def open_runtime(path: Path, options: RuntimeOptions) -> TensorRTRuntime:
    """Open the TensorRT build of an export folder (or an engine folder) for ``options.precision``."""
    import_tensorrt()  # a clear message first on machines without TensorRT
    export_dir, folder = find_engine_folder(path, options.precision, options.extra.get("target"))
    rel = [f"{folder.name}/{f}" for f in ("prefix.engine", "suffix.engine", BUILD_FILE)]
    layout.verified_card(export_dir, rel)  # sha256 of the engines and build.json before deserializing
    card = read_card(export_dir, verify=False)
    build = read_build(folder)
    if build.get("precision") != options.precision:
        raise ArtifactError(
            f"{folder}: build.json says {build.get('precision')}, expected {options.precision}"
        )
    return TensorRTRuntime(card, folder, build, options)
