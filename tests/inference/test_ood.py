"""OOD referral end to end: fit the density on a tiny model (``calibrate-ood``), carry it
through the export, score every case on torch, ONNX Runtime and OpenVINO.

The tiny model has random weights, so it cannot tell one synthetic shape class from an
unseen one; the OOD input here is a high-contrast checkerboard (a gross change of input
statistics that random features do see). Semantic OOD on a trained model is measured in
``benchmarks/ood_referral.py``, not asserted here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from inference_helpers import write_png
from typer.testing import CliRunner

from drifa_edge.artifact.card import read_card
from drifa_edge.artifact.ood import OOD_FILE, read_ood
from drifa_edge.inference.engine import EngineConfig
from drifa_edge.inference.manifest import Case
from drifa_edge.inference.predictor import Predictor, PreparedCase
from drifa_edge.model.config import ModelConfig, TaskSpec
from drifa_edge.runtimes.base import RuntimeOptions, probe_runtime

pytest.importorskip("torch")
pytest.importorskip("onnx")

# the two tasks of the built-in synthetic set, so `--data synthetic` fits them
TASKS = (
    TaskSpec("derm", ("blob", "ring", "cross")),
    TaskSpec("scan", ("stripes", "checker", "spots"), channels=1),
)
SIZE = 32
T = 8  # fit and predict with the same T: the MC-mean embedding's spread depends on it


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny random checkpoint with ood.npz fitted by the CLI (a few seconds)."""
    import torch

    from drifa_edge.artifact.card import default_card
    from drifa_edge.artifact.checkpoint import save_checkpoint
    from drifa_edge.cli import app
    from drifa_edge.model.drifa import build_model

    folder = tmp_path_factory.mktemp("ood") / "ckpt"
    torch.manual_seed(0)
    cfg = ModelConfig(tasks=TASKS, image_size=SIZE, width=0.125, dropout=0.25)
    save_checkpoint(build_model(cfg).eval(), default_card(cfg), folder)
    args = ["calibrate-ood", str(folder), "--data", "synthetic", "-T", str(T), "--threads", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.stdout)["ood"]) == {"derm", "scan"}  # the JSON alone on stdout
    assert "OOD: MC-mean embedding of" in result.stderr  # stage lines on stderr
    return folder


@pytest.fixture(scope="module")
def artifacts(checkpoint) -> tuple[Path, Path]:
    """(the checkpoint, its ONNX + OpenVINO export); the export takes ~30-50 s here."""
    from drifa_edge.export.onnx import export_onnx

    out = checkpoint.parent / "export"
    if not out.exists():
        export_onnx(checkpoint, out, check=False)
        if probe_runtime("openvino").get("available"):
            from drifa_edge.export.openvino import export_openvino

            export_openvino(out, check=False)
    return checkpoint, out


# the exported runtimes need the export (slow here); torch runs on the checkpoint alone
RUNTIMES = (
    "torch",
    pytest.param("onnxruntime", marks=pytest.mark.slow),
    pytest.param("openvino", marks=pytest.mark.slow),
)


def _folder(request, runtime: str) -> tuple[Path, Path]:
    """(folder to open for ``runtime``, the checkpoint)."""
    if not probe_runtime(runtime).get("available"):
        pytest.skip(f"{runtime} not installed")
    checkpoint = request.getfixturevalue("checkpoint")
    if runtime == "torch":
        return checkpoint, checkpoint
    return request.getfixturevalue("artifacts")[1], checkpoint


def _in_distribution(card, n: int = 20) -> list[np.ndarray]:
    from drifa_edge.drift.check import load_split

    images, _, _ = load_split(["synthetic"], card, "test", n)
    return images  # per task (n, C, S, S)


def _checkerboard(n: int = 8) -> list[np.ndarray]:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    board = ((yy // 2 + xx // 2) % 2 * 6.0 - 3.0).astype(np.float32)  # +-3 std after normalization
    return [np.broadcast_to(board, (n, t.channels, SIZE, SIZE)).copy() for t in TASKS]


def _predict(folder: Path, runtime: str, images: list[np.ndarray], **extra) -> list[dict]:
    options = RuntimeOptions(threads=1, extra=extra)
    items = [
        PreparedCase(Case(f"c{i}", {t.name: None for t in TASKS}), [x[i] for x in images])
        for i in range(len(images[0]))
    ]
    with Predictor.open(folder, runtime, options, EngineConfig(samples=T, seed=0)) as p:
        return p.predict_prepared(items)


@pytest.mark.slow
def test_export_carries_the_density_hashed(artifacts):
    ckpt, export = artifacts
    assert (export / OOD_FILE).read_bytes() == (ckpt / OOD_FILE).read_bytes()
    assert read_card(export).files[OOD_FILE] == read_card(ckpt).files[OOD_FILE]
    density = read_ood(export)
    width = read_card(export).model.stage_widths[-1]
    assert density["derm"].columns == (0, width) and density["scan"].columns == (width, 2 * width)
    assert density["derm"].fit["fit_split"] == "train" and density["derm"].fit["threshold_split"] == "val"


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_score_matches_torch_features_and_scipy(request, runtime):
    """Dropout off: the record's ood_score equals scipy's Mahalanobis distance on the
    features of the PyTorch model (an independent path: no graph, no engine)."""
    distance = pytest.importorskip("scipy.spatial.distance")
    import torch

    from drifa_edge.artifact.checkpoint import load_checkpoint
    from drifa_edge.model.dropout import set_dropout_mode

    folder, ckpt = _folder(request, runtime)
    images = _in_distribution(read_card(folder), 4)
    records = _predict(folder, runtime, images, dropout="off")
    model, _ = load_checkpoint(ckpt)
    set_dropout_mode(model.eval(), "off")
    with torch.no_grad():
        feats = model.forward_features([torch.from_numpy(x) for x in images]).numpy()  # (4, 2*W3)
    density = read_ood(folder)
    for task, d in density.items():
        x = feats[:, d.columns[0] : d.columns[1]]
        expected = [min(distance.mahalanobis(r, m, d.precision) ** 2 for m in d.means) for r in x]
        got = [rec["tasks"][task]["ood_score"] for rec in records]
        # float32 graphs vs float64 scipy, and records keep 6 significant digits
        np.testing.assert_allclose(got, expected, rtol=2e-3)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_checkerboard_is_referred_as_ood(request, runtime):
    folder, _ = _folder(request, runtime)
    normal = _predict(folder, runtime, _in_distribution(read_card(folder)))
    foreign = _predict(folder, runtime, _checkerboard())
    for task in ("derm", "scan"):
        thr = read_ood(folder)[task].threshold
        got = [r["tasks"][task] for r in foreign]
        assert all(t["ood_threshold"] == pytest.approx(thr, rel=1e-5) for t in got)
        flagged = [t for t in got if t["ood"]]
        assert len(flagged) >= 0.75 * len(got), [t["ood_score"] for t in got]
        assert all(t["refer"] is True and t["referral"]["reason"] == "ood" for t in flagged)
        normal_scores = [r["tasks"][task]["ood_score"] for r in normal]
        assert np.median([t["ood_score"] for t in got]) > np.quantile(normal_scores, 0.9)
        if runtime == "torch":  # the density was fitted with torch: its false-referral rate holds
            normal_rate = np.mean([r["tasks"][task]["ood"] for r in normal])
            assert normal_rate <= 0.3  # fitted for 5 % on 'val' (27 cases); 20 test cases leave room
        # ONNX Runtime's in-graph MC draws gave ~30 % higher scores than torch's on this
        # random tiny model (dropout-off scores agree, see above): fit on the deployed runtime


@pytest.mark.slow
def test_threshold_only_refit_keeps_the_density(artifacts, tmp_path):
    from drifa_edge.cli import app

    folder = tmp_path / "export"
    shutil.copytree(artifacts[1], folder)
    before = read_ood(folder)
    args = ["calibrate-ood", str(folder), "--data", "synthetic", "--threshold-only", "--target-rate", "0.5"]
    result = CliRunner().invoke(app, [*args, "-T", str(T), "--threads", "1", "--runtime", "onnxruntime"])
    assert result.exit_code == 0, result.output
    after = read_ood(folder)  # re-hashed in the card, or this raises
    for task in before:
        np.testing.assert_array_equal(after[task].means, before[task].means)
        assert after[task].threshold < before[task].threshold  # 50 % flagged, not 5 %
        assert after[task].fit["threshold_split"].startswith("all")


BLOCK_TORCH = textwrap.dedent(
    """
    import importlib.abc, sys

    class BlockTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, BlockTorch())
    from drifa_edge.cli import main
    sys.argv = ["drifa-edge", *sys.argv[1:]]
    main()
    """
)


@pytest.mark.slow
def test_predict_without_torch_reads_the_density(artifacts, tmp_path):
    if not probe_runtime("onnxruntime").get("available"):
        pytest.skip("onnxruntime not installed")
    rng = np.random.default_rng(0)
    derm = write_png(tmp_path / "d.png", rng.random((32, 32, 3)))
    scan = write_png(tmp_path / "s.png", rng.random((32, 32)))
    args = ["predict", str(artifacts[1]), "--runtime", "onnxruntime", "-T", str(T), "--threads", "1"]
    proc = subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH, *args, "--input", f"derm={derm}", "--input", f"scan={scan}"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(proc.stdout.strip().splitlines()[-1])
    for task in ("derm", "scan"):
        t = record["tasks"][task]
        assert t["ood_score"] >= 0 and isinstance(t["ood"], bool) and t["ood_threshold"] > 0
