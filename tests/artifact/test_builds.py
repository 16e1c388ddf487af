"""list_builds: the builds an artifact folder holds, from its layout alone."""

from __future__ import annotations

from drifa_edge.artifact.builds import Build, list_builds
from drifa_edge.artifact.card import default_card, write_card
from drifa_edge.artifact.checkpoint import WEIGHTS_FILE
from drifa_edge.model.config import ModelConfig, TaskSpec


def _folder(tmp_path, *subfolders: str, weights: bool = False):
    cfg = ModelConfig(tasks=(TaskSpec("a", ("x", "y")), TaskSpec("b", ("p", "q"), 1)), image_size=32)
    write_card(default_card(cfg), tmp_path)
    for sub in subfolders:
        (tmp_path / sub).mkdir()
    if weights:
        (tmp_path / WEIGHTS_FILE).write_bytes(b"")
    return tmp_path


def test_a_checkpoint_is_the_torch_build(tmp_path):
    assert list_builds(_folder(tmp_path, weights=True)) == [
        Build("torch", "fp32", ""),
        Build("torch", "bf16", ""),
    ]


def test_an_export_lists_each_runtime_precision_and_tensorrt_target(tmp_path):
    folder = _folder(
        tmp_path, "onnx", "openvino-int8", "tensorrt-jetson-orin-fp16", "tensorrt-x-fp64", "notes"
    )
    assert list_builds(folder) == [
        Build("openvino", "int8", "openvino-int8"),
        Build("onnxruntime", "fp32", "onnx"),
        Build("tensorrt", "fp16", "tensorrt-jetson-orin-fp16", "jetson-orin"),
    ]
