"""One tiny exported model shared by the runtime tests (exported once per session; the
model is ``make_tiny_checkpoint`` of tests/conftest.py, as in tests/export)."""

from __future__ import annotations

from pathlib import Path

import pytest

TASKS = (("derm", ("nevus", "melanoma", "keratosis"), 3), ("xray", ("normal", "pneumonia"), 1))


@pytest.fixture(scope="session")
def tiny_artifacts(tiny_checkpoint_factory, tmp_path_factory) -> tuple[Path, Path]:
    """(checkpoint folder, export folder with ONNX and OpenVINO graphs, checks skipped)."""
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from drifa_edge.export.onnx import export_onnx

    root = tmp_path_factory.mktemp("tiny")
    checkpoint = tiny_checkpoint_factory(
        root / "checkpoint", TASKS, randomize_bn=True, temperature={"derm": 1.5}
    )
    out = root / "export"
    export_onnx(checkpoint, out, check=False)
    try:
        import openvino  # noqa: F401
    except ImportError:
        return checkpoint, out
    from drifa_edge.export.openvino import export_openvino

    export_openvino(out, check=False)
    return checkpoint, out
