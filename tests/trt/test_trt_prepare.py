"""Preparing TensorRT graphs on a CPU (any x86 box) apart from building engines on the target.

Checks what ``prepare_graphs`` writes per major and precision, that a build refuses
graphs prepared for another major or edited since, and that a failed step leaves no
files behind.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from drifa_edge.errors import ConfigError, ExportError, MissingDependencyError  # noqa: E402
from drifa_edge.export import tensorrt as trt_export  # noqa: E402
from drifa_edge.export import tensorrt_prepare as prep  # noqa: E402


@pytest.fixture
def export_copy(tiny_export, tmp_path):
    dst = tmp_path / "out"
    shutil.copytree(tiny_export, dst)
    return dst


def test_build_path_table():
    paths = {(m, p): trt_export.build_path(m, p) for m in (10, 11) for p in ("fp32", "fp16", "int8")}
    assert paths[10, "fp16"].flags == ("FP16",) and paths[10, "int8"].flags == ("FP16", "INT8")
    assert all(paths[11, p].flags == () and paths[11, p].typing == "strong" for p in ("fp32", "fp16", "int8"))
    assert paths[11, "fp16"].graph == "fp16" and paths[11, "int8"].graph == paths[10, "int8"].graph == "qdq"
    assert (paths[10, "int8"].rest, paths[11, "int8"].rest) == ("fp16", "fp32")
    for major in (9, 12):
        with pytest.raises(ConfigError, match="supported: 10.x to 11.x"):
            trt_export.build_path(major, "fp16")


def test_prepare_fp16_for_11x_writes_fp16_graphs(export_copy):
    pytest.importorskip("onnxconverter_common")
    record = prep.prepare_graphs(
        export_copy, "desktop-cuda", "fp16", tensorrt_major=11, fp16_backend="onnxconverter"
    )
    folder = export_copy / "tensorrt-desktop-cuda-fp16"
    assert record["path"]["typing"] == "strong" and record["path"]["graph"] == "fp16"
    assert sorted(p.name for p in folder.iterdir()) == [
        "prefix.fp16.onnx",
        "prepared.json",
        "suffix.fp16.onnx",
    ]
    assert json.loads((folder / "prepared.json").read_text())["sha256"] == record["sha256"]
    assert prep.read_prepared(folder, export_copy, 11, "fp16", "graph")["graphs"] == record["graphs"]
    with pytest.raises(ExportError, match="prepared for TensorRT 11.x, this machine has 10.x"):
        prep.read_prepared(folder, export_copy, 10, "fp16", "graph")
    (folder / "suffix.fp16.onnx").write_bytes(b"edited")
    with pytest.raises(ExportError, match="sha256 differs"):
        prep.read_prepared(folder, export_copy, 11, "fp16", "graph")


def test_prepare_fp16_for_10x_uses_the_fp32_graphs(export_copy):
    record = prep.prepare_graphs(export_copy, "desktop-cuda", "fp16", tensorrt_major=10)
    assert record["path"]["flags"] == ["FP16"]
    assert record["graphs"] == {"prefix": "onnx/prefix.onnx", "suffix": "onnx/suffix.onnx"}
    assert sorted(p.name for p in (export_copy / "tensorrt-desktop-cuda-fp16").iterdir()) == ["prepared.json"]


def test_jetson_targets_stay_on_10x(export_copy):
    with pytest.raises(ConfigError, match="--trt-major 10"):
        prep.prepare_graphs(export_copy, "jetson-orin", "fp16", tensorrt_major=11)


def test_prepare_needs_a_major_without_tensorrt(export_copy):
    try:
        trt_export.import_tensorrt()
        pytest.skip("TensorRT is importable here")
    except MissingDependencyError:
        pass
    with pytest.raises(ConfigError, match="--trt-major 10 for Jetson"):
        prep.prepare_graphs(export_copy, "desktop-cuda", "fp16")


def test_a_failed_int8_step_leaves_no_files(export_copy, images):
    """ModelOpt asked for but absent: the error names the extra; the folder this call made is gone."""
    from drifa_edge.quantize import tensorrt_qdq as q

    if q.modelopt_available():
        pytest.skip("ModelOpt is installed here")
    with pytest.raises(MissingDependencyError, match="nvidia-modelopt"):
        prep.prepare_graphs(
            export_copy,
            "desktop-cuda",
            "int8",
            tensorrt_major=11,
            calib_values=images(4),
            subset=4,
            qdq=q.QDQConfig(backend="modelopt"),
        )
    assert not (export_copy / "tensorrt-desktop-cuda-int8").exists()


def test_a_refused_qdq_graph_is_removed(export_copy, images, monkeypatch):
    """A Q/DQ writer whose graph breaks the placement rule: ExportError, and no suffix.qdq.onnx on disk."""
    import onnx
    from onnx import helper, numpy_helper

    from drifa_edge.quantize import tensorrt_qdq as q

    def quantize_the_mask(onnx_in, onnx_out, feeds, config):
        model = onnx.load(str(onnx_in))
        cast = next((n for n in model.graph.node if n.op_type == "Cast"), None)
        if cast is None:  # the prefix: no MC mask
            onnx.save(model, str(onnx_out))
            return
        consumer = next(n for n in model.graph.node if cast.output[0] in n.input)
        model.graph.initializer.extend(
            [
                numpy_helper.from_array(np.array(0.01, np.float32), "s"),
                numpy_helper.from_array(np.array(0, np.int8), "z"),
            ]
        )
        model.graph.node.extend(
            [
                helper.make_node("QuantizeLinear", [cast.output[0], "s", "z"], ["mq"], name="qmask"),
                helper.make_node("DequantizeLinear", ["mq", "s", "z"], ["md"], name="dqmask"),
            ]
        )
        consumer.input[list(consumer.input).index(cast.output[0])] = "md"
        onnx.save(model, str(onnx_out))

    monkeypatch.setattr(q, "_quantize_ort", quantize_the_mask)
    monkeypatch.setattr(q, "modelopt_available", lambda: False)
    folder = export_copy / "tensorrt-desktop-cuda-int8"
    with pytest.raises(ExportError, match="quantizes an MC mask"):
        prep.prepare_graphs(
            export_copy, "desktop-cuda", "int8", tensorrt_major=10, calib_values=images(4), subset=4
        )
    assert not folder.exists()


def test_cli_prepare_only_and_option_checks(export_copy):
    """`export --trt --prepare-only --trt-major 11 --fp16` writes the FP16 graphs; misuse is refused."""
    pytest.importorskip("onnxconverter_common")
    from typer.testing import CliRunner

    from drifa_edge.cli import app

    runner = CliRunner()
    ckpt = str(export_copy)  # not read by --trt; the export folder is --out
    base = ["export", ckpt, "--out", str(export_copy), "--trt"]
    result = runner.invoke(app, [*base, "--prepare-only", "--trt-major", "11", "--fp16"])
    assert result.exit_code == 0, result.output
    assert (export_copy / "tensorrt-desktop-cuda-fp16" / "suffix.fp16.onnx").is_file()
    refused = {
        "--trt-major only applies with --prepare-only": [*base, "--trt-major", "11"],
        "only apply with --trt": [
            "export",
            ckpt,
            "--out",
            str(export_copy),
            "--int8",
            "--qdq-backend",
            "drifa",
        ],
        "Q/DQ backend must be auto, modelopt or drifa": [*base, "--prepare-only", "--qdq-backend", "trt"],
    }
    for message, args in refused.items():
        result = runner.invoke(app, args)
        assert isinstance(result.exception, ConfigError) and message in str(result.exception), args
