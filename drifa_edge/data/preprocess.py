"""Image -> model input, exactly as the model card says (numpy + PIL, shared by every runtime).

(H, W, C) float32 in [0, 1] -> channel conversion -> bilinear resize to size x size -> (x - mean) / std
-> (C, size, size) float32. Training, export checks, calibration and every runtime call this one
function, so an INT8 build never sees differently prepared pixels than the FP32 model did.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from drifa_edge.data.preprocess_spec import PreprocessSpec
from drifa_edge.errors import BadInputError

# ITU-R BT.601 luma weights (what PIL's convert("L") uses)
LUMA_601 = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """(H, W, C) -> (H, W, channels): gray -> RGB repeats the plane, RGB -> gray is BT.601 luma.
    A 4th (alpha) channel is dropped."""
    if image.ndim != 3:
        raise BadInputError(f"expected an (H, W, C) image, got shape {image.shape}")
    c = image.shape[-1]
    if c == 4:
        image, c = image[..., :3], 3
    if c == channels:
        return image
    if c == 1 and channels == 3:
        return np.repeat(image, 3, axis=-1)
    if c == 3 and channels == 1:
        return np.tensordot(image.astype(np.float32), LUMA_601, axes=([-1], [0]))[..., None]
    raise BadInputError(f"cannot convert an image with {c} channels to {channels} channels")


def resize_bilinear(image: np.ndarray, size: int) -> np.ndarray:
    """(H, W, C) float32 -> (size, size, C) with PIL's bilinear filter on 32-bit float planes
    (antialiased when shrinking), one channel at a time so no 8-bit rounding happens."""
    h, w, c = image.shape
    if (h, w) == (size, size):
        return image.astype(np.float32, copy=False)
    out = np.empty((size, size, c), dtype=np.float32)
    for k in range(c):
        plane = Image.fromarray(np.ascontiguousarray(image[:, :, k], dtype=np.float32), mode="F")
        out[:, :, k] = np.asarray(plane.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)
    return out


def preprocess(image: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """(H, W, C) float32 in [0, 1] -> (spec.channels, spec.size, spec.size) float32, normalized."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4) or min(image.shape[:2]) < 1:
        raise BadInputError(f"expected an (H, W, C) image with C in 1, 3, 4; got shape {image.shape}")
    if not np.isfinite(image).all():
        raise BadInputError("image contains NaN or Inf values")
    image = image.astype(np.float32, copy=False)
    # Converting before resizing when channels drop (and after when they grow) resizes fewer planes;
    # both steps are linear so the order does not change the result beyond float rounding.
    if image.shape[-1] > spec.channels:
        x = resize_bilinear(to_channels(image, spec.channels), spec.size)
    else:
        x = to_channels(resize_bilinear(image, spec.size), spec.channels)
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    x = (x - mean) / std
    return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)


def preprocess_batch(images: list[np.ndarray], spec: PreprocessSpec) -> np.ndarray:
    """A list of (H, W, C) images (any sizes) -> (B, C, S, S) float32."""
    if len(images) == 0:
        raise BadInputError("preprocess_batch got no images")
    out = np.empty((len(images), spec.channels, spec.size, spec.size), dtype=np.float32)
    for i, image in enumerate(images):
        out[i] = preprocess(image, spec)
    return out
