"""Export: ONNX with MC dropout kept (:mod:`.onnx`), OpenVINO IR (:mod:`.openvino`),
TensorRT engines (:mod:`.tensorrt`) and the checks that end every export (:mod:`.checks`).
The folder layout they write is :mod:`drifa_edge.artifact.layout`. Heavy imports stay in
the submodules.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drifa_edge.artifact.card import read_card
from drifa_edge.artifact.ensemble import resolve_members


@dataclass(frozen=True)
class ExportResult:
    out: Path
    members: tuple[Path, ...]  # (out,) for a single model
    files: dict[str, str]  # path relative to ``out`` -> sha256
    checks: dict[str, list[dict[str, Any]]]  # member folder ("." for a single model) -> results

    @property
    def passed(self) -> bool:
        return all(r["passed"] for results in self.checks.values() for r in results)


def collect_files(out: Path) -> dict[str, str]:
    """Every file the card(s) under ``out`` vouch for, relative to ``out``."""
    files = {}
    for member in resolve_members(out):
        prefix = "" if member == out else f"{member.relative_to(out)}/"
        files.update({prefix + rel: sha for rel, sha in read_card(member, verify=False).files.items()})
    return files


def export_all(
    checkpoint: Path,
    out: Path,
    *,
    openvino: bool = True,
    check: bool = True,
    opset: int | None = None,
    exporter: str = "torchscript",
    check_config: Any = None,
    force: bool = False,
) -> ExportResult:
    """ONNX export, then (optionally) OpenVINO IR, each followed by its checks; what
    ``drifa-edge export --onnx --openvino`` and ``drifa-edge demo`` run. ``check_config``
    is a :class:`drifa_edge.export.checks.CheckConfig` (None: the defaults); ``force`` exports
    a checkpoint whose card flags a task at chance (see :mod:`drifa_edge.export.trust`)."""
    from drifa_edge.export.onnx import export_onnx

    result = export_onnx(
        checkpoint, out, opset, check, exporter=exporter, check_config=check_config, force=force
    )
    if not openvino:
        return result
    from drifa_edge.export.openvino import export_openvino

    converted = export_openvino(out, check, checkpoint=checkpoint, check_config=check_config)
    checks = {k: result.checks.get(k, []) + converted.checks.get(k, []) for k in result.checks}
    return ExportResult(result.out, result.members, converted.files, checks)
