"""drifa-edge's TensorRT code against NVIDIA's real Python bindings, 10.x and 11.x, without a GPU.

Each test runs ``trt_api_driver.py`` in a subprocess that imports a real
``tensorrt_cu12_bindings`` wheel (10.3.0: JetPack 6; 11.4.0.106: desktop CUDA today)
over stand-in libraries, and drives ``build_engine`` and the TensorRT runtime
through ``create_autospec(<real class>, spec_set=True)`` doubles. A removed or
misspelled attribute (``BuilderFlag.FP16`` on 11.x, say) raises AttributeError
there and fails here. Marked ``trt_api``: needs gcc and, the first time, pip access
to PyPI (skipped with the reason otherwise). About 10 s in all once the two wheels
(2.4 MB) are cached.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.trt_api

DRIVER = Path(__file__).with_name("trt_api_driver.py")
REPO = Path(__file__).resolve().parents[2]
INPUTS = {"x": [-1, 4, 2, 2]}
SHAPES = {"x": [[1, 4, 2, 2], [3, 4, 2, 2], [8, 4, 2, 2]]}


def drive(bindings, scenario: str, **args) -> dict:
    run = subprocess.run(
        [sys.executable, str(DRIVER), scenario, json.dumps(args, default=str)],
        env=bindings.env(str(REPO)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["version"] == bindings.version
    return result


def tiny_graph(path: Path, kind: str) -> Path:
    """x (N, 4, 2, 2) -> Conv 1x1 -> y, as fp32, fp16 (Casts around an FP16 Conv) or Q/DQ."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).standard_normal((4, 4, 1, 1)).astype(np.float32)
    nodes, inits, x = [], [], "x"
    if kind == "fp16":
        inits.append(numpy_helper.from_array(w.astype(np.float16), "w"))
        nodes += [helper.make_node("Cast", ["x"], ["x16"], to=TensorProto.FLOAT16)]
        nodes += [
            helper.make_node("Conv", ["x16", "w"], ["y16"]),
            helper.make_node("Cast", ["y16"], ["y"], to=1),
        ]
    else:
        if kind == "qdq":
            s, z = (
                numpy_helper.from_array(np.array(0.05, np.float32), "s"),
                numpy_helper.from_array(np.array(0, np.int8), "z"),
            )
            inits += [s, z]
            nodes += [
                helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
                helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
            ]
            x = "xd"
        inits.append(numpy_helper.from_array(w, "w"))
        nodes.append(helper.make_node("Conv", [x, "w"], ["y"]))
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 2, 2])],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def build(bindings, tmp_path, precision: str, graph: str, **extra) -> dict:
    onnx_path = tiny_graph(tmp_path / f"{graph}.onnx", graph)
    return drive(
        bindings,
        "build",
        onnx=str(onnx_path),
        engine=str(tmp_path / f"{precision}.engine"),
        precision=precision,
        target="desktop-cuda",
        inputs=INPUTS,
        shapes=SHAPES,
        **extra,
    )


# Expected builder calls per major: the weak (10.x) and strong (11.x) paths.
EXPECTED_FLAGS = {
    10: {"fp32": [], "fp16": ["FP16"], "int8": ["FP16", "INT8"]},
    11: {"fp32": [], "fp16": [], "int8": []},
}
GRAPH_FOR = {
    10: {"fp32": "fp32", "fp16": "fp32", "int8": "qdq"},
    11: {"fp32": "fp32", "fp16": "fp16", "int8": "qdq"},
}


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_build_engine_through_the_real_classes(trt_bindings, tmp_path, precision):
    """On 11.x, using BuilderFlag.FP16 (or INT8) raises AttributeError in the driver: this fails."""
    major = trt_bindings.major
    got = build(trt_bindings, tmp_path, precision, GRAPH_FOR[major][precision])
    assert got["ok"], got.get("traceback")
    assert got["set_flag"] == EXPECTED_FLAGS[major][precision]
    strong = got["strongly_typed_bit"] if major >= 11 else 0
    assert got["create_network_flags"] == strong
    assert got["memory_pool"] == [["WORKSPACE", 2048 << 20]]
    assert got["set_shape"] == [["x", *SHAPES["x"]]]
    assert got["engine_bytes"] == "serialized-engine"
    path = got["record"]["path"]
    assert (path["major"], path["typing"]) == (major, "weak" if major == 10 else "strong")
    assert (
        path["rest"] == {"fp32": "fp32", "fp16": "fp16", "int8": "fp16" if major == 10 else "fp32"}[precision]
    )


def test_the_weak_path_on_11x_is_caught(trt_bindings, tmp_path):
    """The harness can fail: forcing the 10.x code path on 11.x hits the removed BuilderFlag.FP16."""
    got = build(trt_bindings, tmp_path, "fp16", "fp32", force_path=True)
    if trt_bindings.major == 10:
        assert got["ok"] and got["set_flag"] == ["FP16"]
    else:
        assert not got["ok"]
        assert got["error"] == "AttributeError" and "FP16" in got["message"]


def test_fp16_on_11x_refuses_an_fp32_graph(trt_bindings, tmp_path):
    got = build(trt_bindings, tmp_path, "fp16", "fp32")
    if trt_bindings.major == 10:
        assert got["ok"] and got["set_flag"] == ["FP16"]
    else:
        assert got["error"] == "ExportError"
        assert "strongly typed" in got["message"] and "--prepare-only" in got["message"]


def test_int8_needs_a_qdq_graph_on_both_majors(trt_bindings, tmp_path):
    got = build(trt_bindings, tmp_path, "int8", "fp32")
    assert got["error"] == "ExportError" and "no Q/DQ nodes" in got["message"]


def test_jetson_dla_profile(trt_bindings, tmp_path):
    """DLA (Jetson, 10.x only): device type, core and GPU fallback through the real IBuilderConfig."""
    profile = {"rows_min": 8, "rows_opt": 8, "rows_max": 8, "dla_core": 0}
    shapes = {"x": [[8, 4, 2, 2]] * 3}
    got = build(
        trt_bindings, tmp_path, "fp16", "fp32" if trt_bindings.major == 10 else "fp16", profile=profile
    )
    got_shapes = got
    if trt_bindings.major == 10:
        assert got["ok"], got.get("traceback")
        assert got["set_flag"] == ["FP16", "GPU_FALLBACK"]
        assert got["record"]["flags"] == ["FP16", "DLA0", "GPU_FALLBACK"]
    else:
        assert got["error"] == "ConfigError" and "TensorRT <= 10.x" in got["message"]
    del got_shapes, shapes


@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_export_tensorrt_end_to_end(trt_bindings, tiny_export, tmp_path, precision):
    """Prepare + build both engines + build.json + card, on the path of each major."""
    import shutil

    if precision == "fp16":
        pytest.importorskip("onnxconverter_common")
    export = tmp_path / "out"
    shutil.copytree(tiny_export, export)
    got = drive(trt_bindings, "export", export=str(export), target="desktop-cuda", precision=precision)
    assert got["ok"], got.get("traceback")
    strong = trt_bindings.major >= 11
    graphs = ["prefix.fp16.onnx", "suffix.fp16.onnx"] if strong and precision == "fp16" else []
    expected = sorted(["build.json", "prefix.engine", "prepared.json", "suffix.engine", *graphs])
    assert got["files"] == expected
    assert got["build"]["path"]["typing"] == ("strong" if strong else "weak")
    assert got["build"]["path"]["major"] == trt_bindings.major
    flags = [] if strong or precision == "fp32" else ["FP16"]
    assert got["set_flag"] == [flags, flags]  # prefix and suffix
    assert len(got["create_network_flags"]) == 2
    from drifa_edge.artifact.card import read_card

    card = read_card(export)  # verifies every hash, the new files included
    section = card.export["tensorrt"][f"tensorrt-desktop-cuda-{precision}"]
    assert section["path"]["typing"] == got["build"]["path"]["typing"]


@pytest.mark.parametrize("dla_core", [-1, 0])
def test_runtime_through_the_real_classes(trt_bindings, tiny_export, tmp_path, dla_core):
    """TensorRTRuntime: deserialize, I/O tensor queries, profile chunking, execute_async_v3."""
    got = drive(trt_bindings, "runtime", export=str(tiny_export), folder=str(tmp_path), dla_core=dla_core)
    assert got["ok"], got.get("traceback")
    assert got["prefix_shapes"] == [[7, 2, 2], [7, 2, 2]]
    assert got["prefix_max_error"] < 1e-4  # each feature = its image's sum (the stand-in engine)
    # suffix: 9 rows of features all = i + 1 over a (2, 2) map -> every logit = 4 (i + 1)
    for i, logits in enumerate(got["logits"]):
        assert np.allclose(logits, 4.0 * (i + 1)) and len(logits) == 9
    assert got["dla_core"] == (0 if dla_core == 0 else None)


def test_import_error_names_the_missing_library(trt_bindings):
    """The wheel is there, libnvinfer is not: the message says so, not 'not installed'."""
    env = trt_bindings.env(str(REPO))
    env["LD_LIBRARY_PATH"] = ""
    code = (
        "from drifa_edge.export.tensorrt import import_tensorrt\n"
        "try:\n    import_tensorrt()\nexcept Exception as e:\n    print(type(e).__name__, '|', e)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    out = run.stdout
    assert out.startswith("MissingDependencyError")
    assert "not installed" not in out
    assert f"libnvinfer.so.{trt_bindings.major}" in out or f"libnvonnxparser.so.{trt_bindings.major}" in out
    assert "pypi.nvidia.com" in out and "JetPack" in out


def test_modelopt_creates_a_trt_builder_when_tensorrt_imports(trt_bindings, tmp_path):
    """ModelOpt's Q/DQ step is not CPU-only on a TensorRT machine: its ONNX loader calls
    ``trt.Builder``, which the stand-in libraries answer with NULL. Needs a separate ModelOpt
    environment (it replaces onnxruntime): set DRIFA_MODELOPT_PYTHON to its python."""
    import os

    python = os.environ.get("DRIFA_MODELOPT_PYTHON")
    if not python:
        pytest.skip("set DRIFA_MODELOPT_PYTHON to the python of a venv with nvidia-modelopt[onnx]")
    graph = tiny_graph(tmp_path / "g.onnx", "fp32")
    code = (
        "import numpy as np\n"
        "from drifa_edge.quantize import tensorrt_qdq as q\n"
        "feeds = [{'x': np.random.default_rng(0).standard_normal((8, 4, 2, 2)).astype(np.float32)}]\n"
        "try:\n"
        f"    q.quantize_for_tensorrt({str(graph)!r}, {str(tmp_path / 'q.onnx')!r}, feeds, q.QDQConfig(backend='modelopt'))\n"
        "    print('quantized')\n"
        "except Exception as e:\n"
        "    print(type(e).__name__, '|', e)\n"
    )
    run = subprocess.run(
        [python, "-c", code], env=trt_bindings.env(str(REPO)), capture_output=True, text=True, timeout=300
    )
    out = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else run.stderr[-500:]
    assert "factory function returned nullptr" in out, out
