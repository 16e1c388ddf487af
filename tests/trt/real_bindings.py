"""NVIDIA's real TensorRT Python bindings, importable without a GPU.

The ``tensorrt_cu12_bindings`` wheels on PyPI (~1.2 MB) hold ``tensorrt_bindings/
tensorrt.so``: every class, method name and enum of that TensorRT release. The .so
links ``libnvinfer.so.N``, ``libnvonnxparser.so.N`` and ``libnvinfer_plugin.so.N``
(N = the major) and, from them, only these entry points (``nm -D --undefined-only``
on 10.3.0 and 11.4.0.106)::

    libnvinfer         createInferBuilder_INTERNAL createInferRuntime_INTERNAL
                       createInferRefitter_INTERNAL getPluginRegistry getBuilderPluginRegistry
    libnvonnxparser    createNvOnnxParser_INTERNAL createNvOnnxParserRefitter_INTERNAL
                       getNvOnnxParserVersion
    libnvinfer_plugin  initLibNvInferPlugins

Stand-in libraries compiled from ``STUB_C`` (every entry point returns NULL / 0)
satisfy the loader, so ``import tensorrt`` works and the classes can be handed to
``unittest.mock.create_autospec(..., spec_set=True)``. Nothing may *call* into them:
the tests replace ``Builder``, ``OnnxParser`` and ``Runtime`` by strict autospecs.

Each major is imported in its own subprocess (two majors cannot share a process,
and the stand-ins must come first on ``LD_LIBRARY_PATH``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

# One wheel per supported major: 10.3 is what JetPack 6 ships (Jetson stays on 10.x),
# 11.4 is what ``pip install tensorrt`` resolves to on desktop CUDA today.
BINDINGS = {10: "10.3.0", 11: "11.4.0.106"}
PACKAGE = "tensorrt_cu12_bindings"
LIBRARIES = ("nvinfer", "nvonnxparser", "nvinfer_plugin")

STUB_C = """\
#include <stddef.h>
void *createInferBuilder_INTERNAL(void *logger, int version) { return NULL; }
void *createInferRuntime_INTERNAL(void *logger, int version) { return NULL; }
void *createInferRefitter_INTERNAL(void *engine, void *logger, int version) { return NULL; }
void *getPluginRegistry(void) { return NULL; }
void *getBuilderPluginRegistry(int capability) { return NULL; }
void *createNvOnnxParser_INTERNAL(void *network, void *logger, int version) { return NULL; }
void *createNvOnnxParserRefitter_INTERNAL(void *refitter, void *logger, int version) { return NULL; }
int getNvOnnxParserVersion(void) { return 0; }
int initLibNvInferPlugins(void *logger, const char *ns) { return 0; }
"""


class Unavailable(Exception):
    """The bindings cannot be prepared here (no compiler, no registry); the reason says why."""


@dataclass(frozen=True)
class Bindings:
    """Where one major's real bindings and its stand-in libraries are."""

    major: int
    version: str
    site: Path  # holds ``tensorrt`` (a link to the wheel's tensorrt_bindings package)
    libs: Path  # holds libnvinfer.so.N, libnvonnxparser.so.N, libnvinfer_plugin.so.N

    def env(self, extra_path: str = "") -> dict[str, str]:
        """Environment for a subprocess that imports these bindings."""
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(self.libs), env.get("LD_LIBRARY_PATH")) if p)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (extra_path, str(self.site), env.get("PYTHONPATH")) if p
        )
        return env


def cache_dir() -> Path:
    """Wheel cache: $DRIFA_TRT_BINDINGS_CACHE, else ~/.cache/drifa-edge/trt-bindings."""
    env = os.environ.get("DRIFA_TRT_BINDINGS_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "drifa-edge" / "trt-bindings"


def compile_stubs(major: int, out: Path) -> Path:
    """The three stand-in libraries for ``major`` under ``out`` (gcc)."""
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise Unavailable("no C compiler (gcc) to build the stand-in TensorRT libraries")
    out.mkdir(parents=True, exist_ok=True)
    src = out / "trt_stub.c"
    src.write_text(STUB_C)
    for name in LIBRARIES:
        target = out / f"lib{name}.so.{major}"
        run = subprocess.run(
            [gcc, "-shared", "-fPIC", "-o", str(target), str(src)], capture_output=True, text=True
        )
        if run.returncode != 0:
            raise Unavailable(f"gcc could not build {target.name}: {run.stderr.strip()[:300]}")
    return out


def download_wheel(version: str, cache: Path) -> Path:
    """The ``tensorrt_cu12_bindings`` wheel of ``version`` for this Python, from the cache or pip."""
    cache.mkdir(parents=True, exist_ok=True)
    found = sorted(cache.glob(f"{PACKAGE}-{version}-*.whl"))
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    found = [w for w in found if f"-{tag}-" in w.name]
    if found:
        return found[0]
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "-q",
        "-d",
        str(cache),
    ]
    try:
        run = subprocess.run([*cmd, f"{PACKAGE}=={version}"], capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired as e:
        raise Unavailable(f"pip download {PACKAGE}=={version} timed out (no registry?)") from e
    found = [w for w in sorted(cache.glob(f"{PACKAGE}-{version}-*.whl")) if f"-{tag}-" in w.name]
    if run.returncode != 0 or not found:
        tail = (run.stderr or run.stdout).strip().splitlines()[-1:] or ["no wheel for this Python"]
        raise Unavailable(f"pip could not download {PACKAGE}=={version} for {tag}: {tail[0][:300]}")
    return found[0]


def prepare(major: int, work: Path, cache: Path | None = None) -> Bindings:
    """Download (or reuse), unpack and link one major's bindings; compile its stand-ins."""
    version = BINDINGS[major]
    wheel = download_wheel(version, cache or cache_dir())
    site = work / f"site-{version}"
    if not (site / "tensorrt_bindings" / "tensorrt.so").is_file():
        with zipfile.ZipFile(wheel) as z:
            z.extractall(site)
    link = site / "tensorrt"  # the `tensorrt` meta wheel's name for the same package
    if not link.exists():
        link.symlink_to("tensorrt_bindings", target_is_directory=True)
    libs = compile_stubs(major, work / f"libs-{major}")
    bindings = Bindings(major, version, site, libs)
    probe = subprocess.run(
        [sys.executable, "-c", "import tensorrt; print(tensorrt.__version__)"],
        env=bindings.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    if probe.returncode != 0 or probe.stdout.strip() != version:
        raise RuntimeError(
            f"the {version} bindings do not import with the stand-ins: {probe.stderr.strip()[-300:]}"
        )
    return bindings
