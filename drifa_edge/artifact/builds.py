"""The builds an artifact folder holds: which runtime can load which precision from where.

Read from the folder's layout alone (no runtime imported): a checkpoint folder
(``model.safetensors``) is the torch build; an export folder has one sub-folder per
ONNX / OpenVINO precision (:mod:`.layout`) and one per TensorRT target and precision
(``tensorrt-<target>-<precision>``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from drifa_edge.artifact import layout
from drifa_edge.artifact.checkpoint import WEIGHTS_FILE
from drifa_edge.artifact.ensemble import resolve_members
from drifa_edge.errors import UnsupportedBackendError

TORCH_PRECISIONS = ("fp32", "bf16")
_TENSORRT_PREFIX = "tensorrt-"


@dataclass(frozen=True)
class Build:
    """One loadable build: ``folder`` is relative to the artifact ("" = the folder itself)."""

    runtime: str
    precision: str
    folder: str
    target: str | None = None  # TensorRT only: the target profile it was built for


def list_builds(root: str | Path) -> list[Build]:
    """Every build of the artifact at ``root`` (its first member for an ensemble), in the
    order torch, OpenVINO, ONNX Runtime, TensorRT."""
    member = resolve_members(root)[0]
    builds: list[Build] = []
    if (member / WEIGHTS_FILE).is_file():
        builds += [Build("torch", p, "") for p in TORCH_PRECISIONS]
    for runtime, folder_of in (("openvino", layout.openvino_folder), ("onnxruntime", layout.onnx_folder)):
        for precision in layout.PRECISIONS:
            try:
                folder = folder_of(precision)
            except UnsupportedBackendError:  # no build of that precision for this runtime
                continue
            if (member / folder).is_dir():
                builds.append(Build(runtime, precision, folder))
    for path in sorted(member.glob(f"{_TENSORRT_PREFIX}*")):
        target, _, precision = path.name[len(_TENSORRT_PREFIX) :].rpartition("-")
        if path.is_dir() and target and precision in layout.TENSORRT_PRECISIONS:
            builds.append(Build("tensorrt", precision, path.name, target))
    return builds
