"""OpenVINO IR from the ONNX export: the same four graphs, FP32 weights
(``compress_to_fp16=False``), the model card in ``rt_info``, then the same checks
as the ONNX export, run in the OpenVINO runtime against the PyTorch checkpoint.
"""

from __future__ import annotations

import logging
from pathlib import Path

from drifa_edge.artifact import layout
from drifa_edge.artifact.card import read_card
from drifa_edge.artifact.ensemble import resolve_members
from drifa_edge.errors import ArtifactError, ExportError, missing_dependency
from drifa_edge.export import ExportResult, collect_files
from drifa_edge.export import checks as export_checks
from drifa_edge.progress import stage
from drifa_edge.runtimes.openvino import RT_INFO_CARD

log = logging.getLogger(__name__)


def convert_graph(onnx_path: Path, xml_path: Path, card_json: str, graph: str) -> None:
    """``openvino.convert_model`` + ``save_model`` of one graph, card in ``rt_info``."""
    import openvino as ov

    try:
        model = ov.convert_model(str(onnx_path))
    except Exception as e:  # the frontend raises its own types
        raise ExportError(f"openvino.convert_model failed for {onnx_path}: {e}") from e
    model.set_rt_info(card_json, RT_INFO_CARD)
    model.set_rt_info(graph, ["drifa_edge", "graph"])
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(xml_path), compress_to_fp16=False)


def _source_checkpoint(out: Path, checkpoint: Path | None) -> Path:
    if checkpoint is not None:
        return Path(checkpoint)
    recorded = read_card(out, verify=False).export.get("source", {}).get("checkpoint")
    if not recorded or not Path(recorded).is_dir():
        raise ExportError(
            f"{out}: the checks need the PyTorch checkpoint, recorded as {recorded!r}, which is not "
            "there; pass checkpoint=... (CLI: export it again with --onnx --openvino) or check=False"
        )
    return Path(recorded)


def _convert_member(out: Path, checkpoint: Path | None, check: bool, config: export_checks.CheckConfig):
    onnx_files = [layout.onnx_file(g) for g in layout.GRAPHS]
    card = layout.verified_card(out, onnx_files)  # refuse to convert tampered ONNX files
    reference = _source_checkpoint(out, checkpoint) if check else None  # fail before converting
    card_json = card.to_json()
    ir_files = []
    for graph, onnx_rel in zip(layout.GRAPHS, onnx_files, strict=True):
        xml_rel, bin_rel = layout.openvino_files(graph)
        stage(f"OpenVINO conversion: {graph} graph -> {out / xml_rel}")
        convert_graph(out / onnx_rel, out / xml_rel, card_json, graph)
        ir_files += [xml_rel, bin_rel]
    import openvino as ov

    graphs = {g: layout.openvino_files(g)[0] for g in layout.GRAPHS}
    section = {"openvino": {"version": ov.get_version(), "compress_to_fp16": False, "graphs": graphs}}
    layout.update_card(out, section, hash_files=ir_files)
    if reference is None:
        return []
    stage(f"OpenVINO parity and MC checks against PyTorch ({out})")
    results = export_checks.run_checks(reference, out, "openvino", config)
    export_checks.record_checks(out, results)
    export_checks.raise_on_failure(out, results)
    return [r.to_dict() for r in results]


def export_openvino(
    out: Path,
    check: bool = True,
    *,
    checkpoint: Path | None = None,
    check_config: export_checks.CheckConfig | None = None,
) -> ExportResult:
    """Convert the ONNX graphs of an export folder (or every ensemble member) to IR.

    ``checkpoint`` is the PyTorch reference for the checks (default: the source recorded
    in the card; for an ensemble, its member folders)."""
    try:
        import openvino  # noqa: F401
    except ImportError as e:
        raise missing_dependency("openvino", "openvino") from e
    out = Path(out)
    if not out.is_dir():
        raise ArtifactError(f"{out}: not an export folder; run 'drifa-edge export CHECKPOINT --onnx' first")
    config = check_config or export_checks.CheckConfig()
    members = resolve_members(out)
    results = {}
    for member in members:
        name = str(member.relative_to(out))  # "." for a single model
        reference = None if checkpoint is None else Path(checkpoint) / name
        results[name] = _convert_member(member, reference, check, config)
    return ExportResult(out, tuple(members), collect_files(out), results)
