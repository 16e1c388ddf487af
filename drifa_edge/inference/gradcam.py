"""Grad-CAM per task on the PyTorch checkpoint (Selvaraju et al., ICCV 2017), with captum's
``LayerGradCam``: the gradient of the task's class logit, averaged over a feature map's
spatial positions, weights that map's channels; the weighted sum, ReLU'd, is upsampled
(bilinear) to the input size.

Layer: the task's own branch after its last stage-2 block and MFA (``branches[k].mfas[5]``,
stride 16). It is the deepest map that is still one modality's own (MIFA mixes the
branches right after) and has more than 2 x 2 cells at the CPU-sized 64 px input;
``layer="stage3"`` takes the last block (stride 32, the classic last-conv choice, 4 x 4 at
128 px). The map is computed with dropout off; ``samples`` > 0 adds the variance of the
maps over that many MC dropout draws (an uncertainty map).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from drifa_edge.errors import ConfigError, missing_dependency

LAYERS = {"stage2": ("mfas", 5), "stage3": ("blocks", 7)}


@dataclass(frozen=True)
class TaskMap:
    """One task's Grad-CAM: ``heat`` (S, S) in [0, 1], the class explained, and the MC
    variance of the (normalized) maps (S, S) when asked for."""

    task: str
    target: str
    heat: np.ndarray
    variance: np.ndarray | None = None


def _captum():
    try:
        from captum.attr import LayerAttribution, LayerGradCam
    except ImportError as e:
        raise missing_dependency("captum", "explain") from e
    return LayerGradCam, LayerAttribution


def grad_cam(
    model: Any,
    images: Sequence[np.ndarray],
    task: int,
    target: int,
    layer: str = "stage2",
    samples: int = 0,
) -> tuple[np.ndarray, np.ndarray | None]:
    """(heat (S, S) in [0, 1], MC variance (S, S) or None) of class ``target`` of task
    index ``task``, for one case: ``images`` one (C, S, S) array per task."""
    import torch

    from drifa_edge.model.dropout import set_dropout_mode

    if layer not in LAYERS:
        raise ConfigError(f"layer must be one of {list(LAYERS)}, got {layer!r}")
    LayerGradCam, LayerAttribution = _captum()
    attr_name, index = LAYERS[layer]
    module = getattr(model.branches[task], attr_name)[index]
    inputs = tuple(torch.from_numpy(np.ascontiguousarray(x, np.float32))[None] for x in images)
    size = inputs[task].shape[-2:]
    cam = LayerGradCam(lambda *xs: model(list(xs))[task], module)

    def one() -> np.ndarray:
        attr = cam.attribute(inputs, target=int(target), relu_attributions=True)  # (1, 1, h, w)
        up = LayerAttribution.interpolate(attr, tuple(size), interpolate_mode="bilinear")
        heat = up[0, 0].detach().numpy().astype(np.float64)
        peak = heat.max()
        return heat / peak if peak > 0 else heat

    model.eval()
    set_dropout_mode(model, "off")
    heat = one()
    variance = None
    if samples > 0:
        set_dropout_mode(model, "mc", seed=0)
        variance = np.stack([one() for _ in range(samples)]).var(axis=0)
        set_dropout_mode(model, "off")
    return heat, variance


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """(C, S, S) image in [0, 1] and (S, S) heat in [0, 1] -> (S, S, 3) uint8 RGB: the heat as
    a blue-green-red ramp blended over the gray or colour image."""
    base = np.repeat(image, 3, axis=0) if image.shape[0] == 1 else image
    base = np.clip(base.transpose(1, 2, 0), 0.0, 1.0)
    h = np.clip(heat, 0.0, 1.0)[..., None]
    ramp = np.concatenate([np.clip(2 * h - 1, 0, 1), 1 - np.abs(2 * h - 1), np.clip(1 - 2 * h, 0, 1)], -1)
    return ((1 - alpha) * base * 255 + alpha * ramp * 255).round().astype(np.uint8)


def explain_case(
    checkpoint: str | Path,
    inputs: Mapping[str, Path],
    out: str | Path,
    targets: Mapping[str, str] | None = None,
    layer: str = "stage2",
    samples: int = 0,
) -> dict[str, dict[str, Any]]:
    """Grad-CAM overlays of one case: ``out/<task>_gradcam.png`` per task (and
    ``<task>_gradcam_variance.png`` with ``samples``), explaining the predicted class
    (dropout off) or ``targets[task]``. Returns per task the class, its probability, files."""
    from PIL import Image

    from drifa_edge.artifact.checkpoint import load_checkpoint
    from drifa_edge.inference.manifest import Case, load_case

    if layer not in LAYERS:  # before the checkpoint is loaded: a bad option fails at once
        raise ConfigError(f"layer must be one of {list(LAYERS)}, got {layer!r}")
    model, card = load_checkpoint(Path(checkpoint))
    arrays, _ = load_case(Case("explain", dict(inputs)), card)
    import torch

    from drifa_edge.model.dropout import set_dropout_mode

    set_dropout_mode(model.eval(), "off")
    with torch.no_grad():
        logits = model([torch.from_numpy(a)[None] for a in arrays])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, dict[str, Any]] = {}
    for k, spec in enumerate(card.model.tasks):
        classes = list(spec.classes)
        probs = torch.softmax(logits[k][0], 0).numpy()
        name = (targets or {}).get(spec.name)
        if name is not None and name not in classes:
            raise ConfigError(f"task {spec.name!r} has no class {name!r}; its classes are {classes}")
        target = classes.index(name) if name is not None else int(probs.argmax())
        heat, variance = grad_cam(model, arrays, k, target, layer, samples)
        pre = card.preprocess[spec.name]
        image = arrays[k] * np.asarray(pre.std)[:, None, None] + np.asarray(pre.mean)[:, None, None]
        files = {"overlay": out / f"{spec.name}_gradcam.png"}
        Image.fromarray(overlay(image, heat)).save(files["overlay"])
        if variance is not None:
            files["variance"] = out / f"{spec.name}_gradcam_variance.png"
            scaled = variance / variance.max() if variance.max() > 0 else variance
            Image.fromarray(overlay(image, scaled)).save(files["variance"])
        peak = np.unravel_index(int(heat.argmax()), heat.shape)
        result[spec.name] = {
            "class": classes[target],
            "probability": float(probs[target]),
            "layer": layer,
            "peak_yx": [int(peak[0]), int(peak[1])],
            "files": {k2: str(v) for k2, v in files.items()},
        }
    return result
