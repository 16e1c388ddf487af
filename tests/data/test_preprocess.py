"""preprocess: checked against hand computations (constants, luma formula, ramps)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from drifa_edge.data.preprocess import preprocess, preprocess_batch, resize_bilinear, to_channels
from drifa_edge.data.preprocess_spec import IMAGENET_MEAN, IMAGENET_STD, PreprocessSpec
from drifa_edge.errors import BadInputError

RNG = np.random.default_rng(1)


@pytest.mark.parametrize("in_size", [20, 32, 77])
def test_constant_image_gives_normalized_constant(in_size: int) -> None:
    colour = np.array([0.2, 0.5, 0.9], np.float32)
    image = np.broadcast_to(colour, (in_size, in_size + 3, 3)).copy()
    spec = PreprocessSpec(size=32, channels=3, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    out = preprocess(image, spec)
    assert out.shape == (3, 32, 32) and out.dtype == np.float32
    expected = (colour - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)  # bilinear keeps a constant
    np.testing.assert_allclose(out, np.broadcast_to(expected[:, None, None], out.shape), atol=1e-5)


def test_no_8bit_rounding() -> None:
    image = np.full((40, 40, 1), 0.3 + 1e-5, np.float32)  # 8-bit would give 77/255 = 0.30196
    out = preprocess(image, PreprocessSpec(size=16, channels=1, mean=(0.0,), std=(1.0,)))
    np.testing.assert_allclose(out, 0.3 + 1e-5, atol=1e-6)


def test_gray_rgb_conversions_by_hand() -> None:
    rgb = RNG.random((5, 4, 3)).astype(np.float32)
    gray = to_channels(rgb, 1)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    np.testing.assert_allclose(gray[..., 0], 0.299 * r + 0.587 * g + 0.114 * b, atol=1e-6)
    np.testing.assert_array_equal(to_channels(gray, 3), np.concatenate([gray] * 3, -1))
    np.testing.assert_array_equal(to_channels(rgb, 3), rgb)
    rgba = np.concatenate([rgb, np.ones((5, 4, 1), np.float32)], -1)
    np.testing.assert_array_equal(to_channels(rgba, 3), rgb)


def test_rgb_to_gray_matches_pil_luma() -> None:
    rgb8 = RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    pil_gray = np.asarray(Image.fromarray(rgb8).convert("L"), np.float32) / 255  # integer BT.601 in PIL
    out = preprocess(rgb8 / np.float32(255), PreprocessSpec(size=32, channels=1, mean=(0.0,), std=(1.0,)))
    assert np.abs(out[0] - pil_gray).max() <= 1 / 255 + 1e-6  # PIL rounds to 8 bit


def test_gray_to_rgb_then_normalized_per_channel() -> None:
    gray = RNG.random((32, 32, 1)).astype(np.float32)
    spec = PreprocessSpec(size=32, channels=3, mean=(0.1, 0.2, 0.3), std=(0.5, 1.0, 2.0))
    out = preprocess(gray, spec)
    for c in range(3):
        np.testing.assert_allclose(out[c], (gray[..., 0] - spec.mean[c]) / spec.std[c], atol=1e-6)


@pytest.mark.parametrize(("src", "dst"), [(64, 32), (96, 32), (16, 32), (24, 32)])
def test_bilinear_resize_of_a_ramp(src: int, dst: int) -> None:
    """A linear ramp stays linear: output pixel j (centre j + 0.5) samples the input at
    (j + 0.5) * src / dst - 0.5. Upsampling interpolates linearly; shrinking by an integer factor puts
    the antialiased triangle filter's taps symmetrically around that point, so a linear function is kept."""
    ramp = np.tile(np.arange(src, dtype=np.float32) / (src - 1), (src, 1))[..., None]
    out = resize_bilinear(ramp, dst)[..., 0]
    j = np.arange(dst)
    expected = ((j + 0.5) * src / dst - 0.5) / (src - 1)
    interior = slice(3, dst - 3)  # the filter is renormalized at the borders
    np.testing.assert_allclose(out[:, interior], np.tile(expected[interior], (dst, 1)), atol=1e-5)
    np.testing.assert_allclose(
        out, np.broadcast_to(out[:1], out.shape), atol=1e-6
    )  # constant along the other axis


def test_batch_equals_single_and_accepts_mixed_sizes() -> None:
    spec = PreprocessSpec.default(32, 3)
    images = [RNG.random((40, 30, 3)).astype(np.float32), RNG.random((20, 20, 1)).astype(np.float32)]
    batch = preprocess_batch(images, spec)
    assert batch.shape == (2, 3, 32, 32)
    for i, image in enumerate(images):
        np.testing.assert_array_equal(batch[i], preprocess(image, spec))


def test_bad_inputs() -> None:
    spec = PreprocessSpec.default(32, 1)
    with pytest.raises(BadInputError, match="NaN"):
        preprocess(np.full((8, 8, 1), np.nan, np.float32), spec)
    with pytest.raises(BadInputError, match="shape"):
        preprocess(np.zeros((2, 8, 8, 1), np.float32), spec)
    with pytest.raises(BadInputError, match="no images"):
        preprocess_batch([], spec)
    np.testing.assert_array_equal(preprocess(np.zeros((8, 8), np.float32), spec), -1.0)  # 2-D = gray
