"""One tiny exported model and its INT8 builds, made once per session.

The model is trained briefly on the synthetic data (derm: RGB, scan: gray; 3 classes
each), so ``--calib synthetic`` draws the images it was trained on and an FP32/INT8
agreement test can fail. Calibration is tiny (6 cases, 4 rows each) to keep the suite fast.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

CALIB = ["synthetic"]
SUBSET = 6
ROWS = 4


def build_checkpoint(folder: Path) -> Path:
    """Width 0.125, 32 px, trained 8 epochs on the synthetic set (~10 s on one thread): a
    random model's MC mean is mostly mask noise, so FP32 would not even agree with itself."""
    pytest.importorskip("torch")
    from drifa_edge.data.synthetic import make_synthetic
    from drifa_edge.training.config import TrainConfig
    from drifa_edge.training.loop import train

    cfg = TrainConfig(
        epochs=8,
        batch_size=16,
        lr=3e-3,
        image_size=32,
        width=0.125,
        bn_momentum=0.1,
        early_stopping_patience=None,
        mc_samples=4,
        threads=1,
    )
    return train(make_synthetic(n_per_class=60, size=32, seed=0), cfg, folder, progress=False)


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory) -> Path:
    """An export folder (ONNX + OpenVINO FP32, checks skipped); treat as read-only."""
    pytest.importorskip("onnx")
    pytest.importorskip("openvino")
    from drifa_edge.export import export_all

    root = tmp_path_factory.mktemp("quantize")
    export_all(build_checkpoint(root / "checkpoint"), root / "export", check=False)
    return root / "export"


def copy_export(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="session")
def ov_int8(tiny_export, tmp_path_factory) -> tuple[Path, dict]:
    """(export folder with openvino-int8/, the card section) from quantize_openvino."""
    pytest.importorskip("nncf")
    from drifa_edge.quantize.config import QuantizeConfig
    from drifa_edge.quantize.nncf import quantize_openvino

    out = copy_export(tiny_export, tmp_path_factory.mktemp("ov") / "export")
    section = quantize_openvino(out, CALIB, QuantizeConfig(subset=SUBSET, rows_per_case=ROWS))
    return out, section


@pytest.fixture(scope="session")
def ort_int8(tiny_export, tmp_path_factory) -> tuple[Path, dict]:
    """(export folder with onnx-int8/, the card section) from quantize_onnx (ORT static).

    ORT also quantizes conv outputs, so it needs a few more cases than NNCF: with 6 cases
    the scan task agreed on 0.81 of cases, with 16 cases x 8 rows on 0.93 (FP32 vs FP32: 0.96).
    Scope attention-fp32 keeps it quick: ORT calibrates every tensor it quantizes, and
    with scope "all" that took ~4 min on the real-data model against 30 s."""
    pytest.importorskip("onnxruntime")
    from drifa_edge.quantize.config import QuantizeConfig
    from drifa_edge.quantize.onnxrt import quantize_onnx

    out = copy_export(tiny_export, tmp_path_factory.mktemp("ort") / "export")
    section = quantize_onnx(
        out,
        CALIB,
        QuantizeConfig(backend="onnx", method="ort", scope="attention-fp32", subset=16, rows_per_case=8),
    )
    return out, section


@pytest.fixture(scope="session")
def synthetic_cases(tiny_export):
    """(images per task, labels per task) of 24 synthetic test cases, preprocessed for the card."""
    from drifa_edge.artifact.card import read_card
    from drifa_edge.data.sources import load_eval_arrays

    card = read_card(tiny_export)
    images, labels, _ = load_eval_arrays(CALIB, card, split="test", limit=24)
    return images, labels
