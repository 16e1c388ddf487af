"""A built-in multimodal image set for demos and tests (no files, no downloads).

Up to four independent tasks, each with three classes told apart by shape or texture, while
position, scale, rotation, contrast, colour and noise vary at random and colour overlaps between
classes, so a small CNN has to learn something (it reaches ~80-100 % in a few epochs) but a
constant or colour-only guess does not. Every image comes from its own seed
(seed, task, class, index), so the set is identical on every machine and growing
``n_per_class`` keeps the earlier images.

=======  =====  =====================================
task     chans  classes
=======  =====  =====================================
derm     RGB    blob, ring, cross  (lesion shapes on skin)
scan     gray   stripes, checker, spots  (textures)
micro    RGB    round, lobed, granular  (stained cell nuclei)
xray     gray   clear, opacity, nodule  (two lung fields)
=======  =====  =====================================
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from drifa_edge.data.labelled import LabelledSet, Sample
from drifa_edge.data.splits import assign_splits
from drifa_edge.errors import ConfigError

TASKS: dict[str, tuple[tuple[str, ...], int]] = {
    "derm": (("blob", "ring", "cross"), 3),
    "scan": (("stripes", "checker", "spots"), 1),
    "micro": (("round", "lobed", "granular"), 3),
    "xray": (("clear", "opacity", "nodule"), 1),
}
TASK_ORDER = ("derm", "scan", "micro", "xray")

Grid = tuple[np.ndarray, np.ndarray]  # (yy, xx) in [0, 1)


def make_synthetic(
    n_per_class: int = 60, size: int = 64, seed: int = 0, tasks: int = 2
) -> dict[str, LabelledSet]:
    """``tasks`` (2-4) labelled in-memory sets with ``n_per_class`` images per class of
    ``size`` x ``size`` pixels and a seeded stratified 70/15/15 train/val/test split."""
    if not 2 <= tasks <= len(TASK_ORDER):
        raise ConfigError(f"synthetic data has 2 to {len(TASK_ORDER)} tasks, got tasks={tasks}")
    if n_per_class < 3:
        raise ConfigError(f"n_per_class must be >= 3 (one per split), got {n_per_class}")
    if not 16 <= size <= 1024:
        raise ConfigError(f"synthetic image size must be in [16, 1024], got {size}")
    options = {"n_per_class": n_per_class, "size": size, "seed": seed, "tasks": tasks}
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    out = {}
    for task_id, name in enumerate(TASK_ORDER[:tasks]):
        classes, _ = TASKS[name]
        draw = _DRAW[name]
        arrays, samples = {}, []
        for label in range(len(classes)):
            for i in range(n_per_class):
                rng = np.random.default_rng([seed & 0xFFFFFFFF, task_id, label, i])
                image = np.clip(draw(label, rng, (yy, xx)), 0.0, 1.0).astype(np.float32)
                image.flags.writeable = False
                key = f"{name}/{classes[label]}/{i:05d}"
                arrays[key] = image
                samples.append(Sample(key, label, "train"))
        samples, how = assign_splits(samples, {None}, seed, 0.15, 0.15)
        out[name] = LabelledSet(
            name, classes, samples, None, f"synthetic; {how}", arrays, kind="synthetic", options=options
        )
    return out


# ---------------------------------------------------------------- drawing helpers


def _rotated(grid: Grid, cy: float, cx: float, angle: float) -> Grid:
    yy, xx = grid
    dy, dx = yy - cy, xx - cx
    c, s = np.cos(angle), np.sin(angle)
    return dx * c + dy * s, -dx * s + dy * c  # (u along the angle, v across)


def _soft(inside: np.ndarray, edge: float) -> np.ndarray:
    """Signed distance (positive inside) -> alpha in [0, 1] with a ramp of width ``edge``."""
    return np.clip(inside / edge + 0.5, 0.0, 1.0)


def _blend(image: np.ndarray, alpha: np.ndarray, colour: np.ndarray) -> np.ndarray:
    return image * (1 - alpha[..., None]) + alpha[..., None] * colour


def _noise(rng: np.random.Generator, image: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return image + rng.normal(0.0, rng.uniform(lo, hi), image.shape).astype(np.float32)


def _shading(rng: np.random.Generator, grid: Grid, strength: float) -> np.ndarray:
    yy, xx = grid
    gy, gx = rng.normal(0, strength, 2)
    return (gy * (yy - 0.5) + gx * (xx - 0.5)).astype(np.float32)


# ---------------------------------------------------------------- tasks


def _derm(label: int, rng: np.random.Generator, grid: Grid) -> np.ndarray:
    """Skin-tone background; a lesion shaped as a blob (0), ring (1) or cross (2)."""
    skin = np.array([0.82, 0.62, 0.52]) + rng.normal(0, 0.06, 3)
    image = np.broadcast_to(skin, grid[0].shape + (3,)) + _shading(rng, grid, 0.15)[..., None]
    means = np.array([[0.38, 0.22, 0.14], [0.55, 0.22, 0.22], [0.35, 0.25, 0.40]])
    colour = means[label] + rng.normal(0, 0.06, 3)
    cy, cx = rng.uniform(0.3, 0.7, 2)
    r = rng.uniform(0.13, 0.26)
    u, v = _rotated(grid, cy, cx, rng.uniform(0, np.pi))
    edge = rng.uniform(0.015, 0.04)
    if label == 0:
        aspect = rng.uniform(0.7, 1.0)
        alpha = _soft(r - np.sqrt(u**2 + (v / aspect) ** 2), edge)
    elif label == 1:
        d = np.sqrt(u**2 + v**2)
        half = r * rng.uniform(0.15, 0.25)
        alpha = _soft(half - np.abs(d - r * 0.8), edge)
    else:
        half = r * rng.uniform(0.14, 0.22)
        bar1 = np.minimum(half - np.abs(v), r - np.abs(u))
        bar2 = np.minimum(half - np.abs(u), r - np.abs(v))
        alpha = _soft(np.maximum(bar1, bar2), edge)
    speckle = 1 + rng.normal(0, 0.12, grid[0].shape)
    image = _blend(image, alpha * np.clip(speckle, 0.5, 1.5) * rng.uniform(0.7, 1.0), colour)
    for _ in range(rng.integers(0, 3)):  # hairs
        hu, hv = _rotated(grid, *rng.uniform(0.1, 0.9, 2), rng.uniform(0, np.pi))
        image = _blend(
            image, _soft(0.006 - np.abs(hv), 0.01) * (np.abs(hu) < 0.4), np.array([0.2, 0.15, 0.1])
        )
    return _noise(rng, image, 0.03, 0.08)


def _scan(label: int, rng: np.random.Generator, grid: Grid) -> np.ndarray:
    """Gray background; a region textured with stripes (0), a checker (1) or spots (2)."""
    yy, xx = grid
    image = rng.uniform(0.3, 0.6) + _shading(rng, grid, 0.2)
    cy, cx = rng.uniform(0.35, 0.65, 2)
    region = _soft(rng.uniform(0.3, 0.42) - np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2), 0.05)
    u, v = _rotated(grid, cy, cx, rng.uniform(0, np.pi))
    freq = rng.uniform(5, 9) * 2 * np.pi
    amplitude = rng.uniform(0.18, 0.3)
    if label == 0:
        texture = np.sin(freq * u + rng.uniform(0, 2 * np.pi))
    elif label == 1:
        texture = 1.6 * np.sin(freq * u) * np.sin(freq * v)
    else:
        texture = np.zeros_like(yy)
        for _ in range(rng.integers(8, 16)):
            sy, sx = cy + rng.normal(0, 0.15), cx + rng.normal(0, 0.15)
            texture += np.exp(-((yy - sy) ** 2 + (xx - sx) ** 2) / (2 * rng.uniform(0.015, 0.03) ** 2))
        texture = 2 * np.clip(texture, 0, 1) - 0.5
    image = image + amplitude * region * texture
    return _noise(rng, image, 0.04, 0.08)[..., None]


def _micro(label: int, rng: np.random.Generator, grid: Grid) -> np.ndarray:
    """Pink stained background; a cell whose nucleus is round (0), lobed (1) or granular (2)."""
    yy, xx = grid
    background = np.array([0.92, 0.78, 0.85]) + rng.normal(0, 0.04, 3)
    image = np.broadcast_to(background, yy.shape + (3,)) + _shading(rng, grid, 0.1)[..., None]
    cy, cx = rng.uniform(0.3, 0.7, 2)
    r = rng.uniform(0.17, 0.25)
    cytoplasm = np.array([0.85, 0.65, 0.8]) + rng.normal(0, 0.04, 3)
    image = _blend(image, _soft(r - np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2), 0.02), cytoplasm)
    stain = np.array([0.42, 0.22, 0.58]) + rng.normal(0, 0.06, 3)
    if label == 0:
        nr = r * rng.uniform(0.5, 0.7)
        alpha = _soft(nr - np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2), 0.02)
    elif label == 1:
        alpha = np.zeros_like(yy)
        start = rng.uniform(0, 2 * np.pi)
        lobes = rng.integers(3, 5)
        for k in range(lobes):
            a = start + 2 * np.pi * k / lobes
            ly, lx = cy + 0.5 * r * np.sin(a), cx + 0.5 * r * np.cos(a)
            alpha = np.maximum(alpha, _soft(r * 0.3 - np.sqrt((yy - ly) ** 2 + (xx - lx) ** 2), 0.015))
    else:
        alpha = np.zeros_like(yy)
        for _ in range(rng.integers(12, 20)):
            d, a = r * 0.8 * np.sqrt(rng.uniform()), rng.uniform(0, 2 * np.pi)
            gy, gx = cy + d * np.sin(a), cx + d * np.cos(a)
            alpha = np.maximum(alpha, _soft(r * 0.1 - np.sqrt((yy - gy) ** 2 + (xx - gx) ** 2), 0.01))
    image = _blend(image, alpha * rng.uniform(0.75, 1.0), stain)
    return _noise(rng, image, 0.03, 0.07)


def _xray(label: int, rng: np.random.Generator, grid: Grid) -> np.ndarray:
    """Bright body, two dark lung fields; clear (0), a large opacity in one lung (1) or
    several small nodules (2)."""
    yy, xx = grid
    image = rng.uniform(0.6, 0.75) + _shading(rng, grid, 0.1)
    lungs = np.zeros_like(yy)
    cy = rng.uniform(0.42, 0.55)
    gap = rng.uniform(0.17, 0.23)
    for side in (-1, 1):
        lx = 0.5 + side * gap
        lungs = np.maximum(lungs, _soft(1 - np.sqrt(((yy - cy) / 0.3) ** 2 + ((xx - lx) / 0.14) ** 2), 0.3))
    image = image - rng.uniform(0.35, 0.45) * lungs
    if label == 1:
        ly, lx = cy + rng.uniform(-0.1, 0.15), 0.5 + rng.choice([-1, 1]) * gap
        blob = np.exp(-(((yy - ly) / rng.uniform(0.12, 0.17)) ** 2 + ((xx - lx) / 0.11) ** 2) / 2)
        image = image + rng.uniform(0.35, 0.5) * blob * lungs
    elif label == 2:
        for _ in range(rng.integers(3, 7)):
            ly = cy + rng.uniform(-0.2, 0.2)
            lx = 0.5 + rng.choice([-1, 1]) * gap + rng.uniform(-0.07, 0.07)
            r = rng.uniform(0.018, 0.03)
            image = image + rng.uniform(0.3, 0.45) * _soft(r - np.sqrt((yy - ly) ** 2 + (xx - lx) ** 2), 0.01)
    return _noise(rng, image, 0.03, 0.06)[..., None]


_DRAW: dict[str, Callable[[int, np.random.Generator, Grid], np.ndarray]] = {
    "derm": _derm,
    "scan": _scan,
    "micro": _micro,
    "xray": _xray,
}
