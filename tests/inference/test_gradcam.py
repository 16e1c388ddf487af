"""Grad-CAM per task (captum LayerGradCam): the map follows the discriminative object, and
``drifa-edge explain`` writes one overlay per task."""

from __future__ import annotations

import json

import numpy as np
import pytest
from inference_helpers import write_png
from typer.testing import CliRunner

pytest.importorskip("torch")
pytest.importorskip("captum")

S = 64


def _blob_model():
    """A tiny DRIFA-Net trained for 40 steps to tell a bright disc (anywhere) from noise."""
    import torch

    from drifa_edge.model.config import ModelConfig, TaskSpec
    from drifa_edge.model.drifa import build_model
    from drifa_edge.model.dropout import set_dropout_mode

    torch.manual_seed(0)
    cfg = ModelConfig(
        tasks=(TaskSpec("derm", ("empty", "blob")), TaskSpec("scan", ("x", "y"), channels=1)),
        image_size=S,
        width=0.125,
    )
    model = build_model(cfg)
    rng = np.random.default_rng(0)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    set_dropout_mode(model, "off")
    model.train()
    for _ in range(40):
        labels = rng.integers(0, 2, 16)
        xs = np.stack([_image(rng, *(rng.integers(8, S - 8, 2) if y else (None, None))) for y in labels])
        logits = model([torch.from_numpy(xs), torch.zeros(16, 1, S, S)])[0]
        loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(labels))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), rng


def _image(rng, cy=None, cx=None) -> np.ndarray:
    yy, xx = np.mgrid[0:S, 0:S]
    x = rng.normal(0, 0.3, (3, S, S)).astype(np.float32)
    if cy is not None:
        x[:, (yy - cy) ** 2 + (xx - cx) ** 2 < 40] += 2.0
    return x


@pytest.mark.slow  # trains a tiny model: ~40 s on a busy 2-core machine
def test_map_peak_moves_with_the_blob():
    from drifa_edge.inference.gradcam import grad_cam

    model, rng = _blob_model()
    yy, xx = np.mgrid[0:S, 0:S]
    for cy, cx in [(16, 16), (48, 48), (16, 48), (48, 16)]:
        heat, _ = grad_cam(model, [_image(rng, cy, cx), np.zeros((1, S, S), np.float32)], 0, 1)
        peak = np.unravel_index(int(heat.argmax()), heat.shape)
        assert (peak[0] >= S // 2, peak[1] >= S // 2) == (cy >= S // 2, cx >= S // 2), (cy, cx, peak)
        w = heat / heat.sum()
        centroid = np.array([(w * yy).sum(), (w * xx).sum()])
        assert np.linalg.norm(centroid - [cy, cx]) < 12, (cy, cx, centroid)


def test_explain_writes_an_overlay_per_task(tmp_path):
    import torch
    from PIL import Image

    from drifa_edge.artifact.card import default_card
    from drifa_edge.artifact.checkpoint import save_checkpoint
    from drifa_edge.cli import app
    from drifa_edge.model.config import ModelConfig, TaskSpec
    from drifa_edge.model.drifa import build_model

    torch.manual_seed(0)
    cfg = ModelConfig(
        tasks=(TaskSpec("derm", ("a", "b")), TaskSpec("scan", ("x", "y", "z"), channels=1)),
        image_size=32,
        width=0.125,
    )
    save_checkpoint(build_model(cfg).eval(), default_card(cfg), tmp_path / "ckpt")
    rng = np.random.default_rng(0)
    derm = write_png(tmp_path / "d.png", rng.random((40, 40, 3)))
    scan = write_png(tmp_path / "s.png", rng.random((30, 30)))
    args = [
        "explain",
        str(tmp_path / "ckpt"),
        "-i",
        f"derm={derm}",
        "-i",
        f"scan={scan}",
        "-o",
        str(tmp_path / "out"),
    ]
    result = CliRunner().invoke(app, [*args, "--target", "scan=z", "-T", "3"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)  # the JSON alone on stdout; stage lines go to stderr
    assert "] Grad-CAM of 2 input(s)" in result.stderr
    assert report["scan"]["class"] == "z" and report["derm"]["class"] in ("a", "b")
    for task in ("derm", "scan"):
        png = np.asarray(Image.open(report[task]["files"]["overlay"]))
        assert png.shape == (32, 32, 3)
        assert Image.open(report[task]["files"]["variance"]).size == (32, 32)
    bad = CliRunner().invoke(app, [*args, "--target", "scan=nope"])
    assert bad.exit_code != 0 and "no class 'nope'" in str(bad.exception)
