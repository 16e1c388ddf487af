"""OpenVINO IR: FP32 weights, the card in rt_info, conversion refuses tampered ONNX."""

from __future__ import annotations

import json
import shutil

import pytest

from drifa_edge.artifact import layout
from drifa_edge.artifact.card import read_card
from drifa_edge.errors import ArtifactError, ExportError

ov = pytest.importorskip("openvino")


def test_ir_keeps_fp32_weights_and_the_card(checked_export):
    _, out, _ = checked_export
    card = read_card(out)
    core = ov.Core()
    for graph in layout.GRAPHS:
        model = core.read_model(str(out / layout.openvino_files(graph)[0]))
        constants = {
            op.get_output_element_type(0).get_type_name()
            for op in model.get_ops()
            if op.get_type_name() == "Constant"
        }
        assert "f16" not in constants  # compress_to_fp16=False
        embedded = json.loads(model.get_rt_info(["drifa_edge", "model_card"]).astype(str))
        assert embedded["model"] == json.loads(card.to_json())["model"]
        assert model.get_rt_info(["drifa_edge", "graph"]).astype(str) == graph
        assert model.inputs[0].get_partial_shape()[0].is_dynamic


def test_mc_suffix_holds_one_random_op_per_dropout(checked_export):
    _, out, _ = checked_export
    model = ov.Core().read_model(str(out / layout.openvino_files("suffix")[0]))
    assert sum(op.get_type_name() == "RandomUniform" for op in model.get_ops()) == 13


def test_conversion_refuses_a_tampered_onnx_file(checked_export, tmp_path):
    from drifa_edge.export.openvino import export_openvino

    _, out, _ = checked_export
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    with open(copy / "onnx/suffix.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ArtifactError, match="sha256"):
        export_openvino(copy, check=False)


def test_checks_need_the_source_checkpoint(checked_export, tmp_path):
    from drifa_edge.export.openvino import export_openvino

    _, out, _ = checked_export
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    card = json.loads((copy / "model_card.json").read_text())
    card["export"]["source"]["checkpoint"] = str(tmp_path / "moved-away")
    (copy / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(ExportError, match="moved-away"):
        export_openvino(copy, check=True)
