"""Read one image file into an (H, W, C) float32 array in [0, 1], C = 1 (gray) or 3 (RGB),
and record how it was read.

Formats: PNG, JPEG, BMP, GIF, WebP (Pillow; EXIF orientation honoured, any mode at any bit
depth), TIFF (tifffile: Orientation tag and photometric interpretation honoured, multi-page
files refused), NPY (``np.load(mmap_mode="r", allow_pickle=False)``) and DICOM (pydicom >= 3
pixel helpers, see :mod:`drifa_edge.data.dicom_reader`). numpy and Pillow only at import;
tifffile and pydicom are imported when a file needs them.

:func:`decode_image` returns the pixels and a :class:`ReadInfo` (decoder, what was stored,
every transform applied, and whether an RGB file holds a gray image) so an output line can
say how each input was read. Every failure is a :class:`BadInputError` naming the file and
what to do, so a batch can report the file and go on. Limits guard against decompression
bombs and absurd arrays.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from drifa_edge.errors import BadInputError

MAX_PIXELS = 50_000_000  # per image (H * W); a 7,000 x 7,000 slide crop still fits
MAX_NPY_BYTES = 1 << 30  # 1 GiB of array data
# A JPEG of a gray image stored as RGB decodes with channel differences of a few levels
# (YCbCr rounding); measured max 2/255 at quality 50-100 on smooth and noisy images.
GRAY_RGB_TOLERANCE_JPEG = 3 / 255

PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
TIFF_SUFFIXES = (".tif", ".tiff")
NPY_SUFFIXES = (".npy",)
DICOM_SUFFIXES = (".dcm", ".dicom")
IMAGE_SUFFIXES = PIL_SUFFIXES + TIFF_SUFFIXES + NPY_SUFFIXES + DICOM_SUFFIXES
_LOSSY_FORMATS = ("JPEG", "WEBP", "MPO")


@dataclass(frozen=True)
class ReadInfo:
    """How a file was read: the decoder, what the file stored, the transforms applied in
    order, and ``gray_as_rgb`` ("exact" or a tolerance) when its three channels hold one
    gray image (``None`` otherwise, and for 1-channel images)."""

    decoder: str
    stored: str
    steps: tuple[str, ...] = ()
    gray_as_rgb: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"decoder": self.decoder, "stored": self.stored, "steps": list(self.steps)}
        if self.gray_as_rgb is not None:
            out["gray_as_rgb"] = self.gray_as_rgb
        return out


@dataclass(frozen=True)
class DecodedImage:
    """(H, W, C) float32 pixels in [0, 1] and how they were read."""

    pixels: np.ndarray
    info: ReadInfo
    source: str = field(default="")


def read_image(path: str | Path) -> np.ndarray:
    """Decode ``path`` into (H, W, C) float32 in [0, 1]; see :func:`decode_image`."""
    return decode_image(path).pixels


def decode_image(path: str | Path) -> DecodedImage:
    """Decode ``path`` and record how; raises :class:`BadInputError` naming the file."""
    path = Path(path)
    if not path.exists():
        raise BadInputError(f"{path}: file not found; check the path (relative paths start at {Path.cwd()})")
    if not path.is_file():
        raise BadInputError(f"{path}: is a directory or special file, not an image file")
    try:
        size = path.stat().st_size
    except OSError as e:
        raise BadInputError(f"{path}: cannot read the file ({e.strerror or e}); check its permissions") from e
    if size == 0:
        raise BadInputError(f"{path}: empty file (0 bytes); re-copy or re-export the image")
    suffix = path.suffix.lower()
    try:
        if suffix in NPY_SUFFIXES:
            pixels, info = _read_npy(path)
        elif suffix in DICOM_SUFFIXES or _has_dicom_magic(path):
            from drifa_edge.data.dicom_reader import read_dicom

            pixels, info = read_dicom(path, MAX_PIXELS)
        elif suffix in TIFF_SUFFIXES:
            pixels, info = _read_tiff(path)
        elif suffix in PIL_SUFFIXES:
            pixels, info = _read_pil(path)
        else:
            raise BadInputError(
                f"{path}: unknown image type {suffix or '(no extension)'!r}; "
                f"supported: {', '.join(IMAGE_SUFFIXES)}; convert the file to PNG or NPY"
            )
    except PermissionError as e:
        raise BadInputError(f"{path}: permission denied; make the file readable (chmod +r)") from e
    pixels = _finish(pixels, path)
    lossy = info.decoder.upper().endswith(_LOSSY_FORMATS) or "JPEG" in info.stored.upper()
    return DecodedImage(pixels, _with_gray_check(info, pixels, lossy), str(path))


def array_to_image(array: np.ndarray, source: str | Path = "<array>") -> np.ndarray:
    """Turn a 2-D/3-D uint8, uint16, bool or float array into (H, W, C) float32 in [0, 1].

    (C, H, W) with C in 1, 3, 4 is transposed; a 4th (alpha) channel is dropped. Float data must be
    finite and already in [0, 1]. Any byte order. Used for NPY files and in-memory arrays (npz)."""
    return _finish(_array_to_unit(np.asarray(array), source, []), source)


def _array_to_unit(a: np.ndarray, source: str | Path, steps: list[str]) -> np.ndarray:
    if a.size == 0:
        raise BadInputError(f"{source}: empty array of shape {a.shape} (no pixels); save one image per file")
    if a.ndim == 2:
        a = a[:, :, None]
    elif a.ndim == 3:
        if a.shape[-1] not in (1, 3, 4) and a.shape[0] in (1, 3, 4):
            a = np.transpose(a, (1, 2, 0))
            steps.append("(C, H, W) -> (H, W, C)")
        if a.shape[-1] not in (1, 3, 4):
            raise BadInputError(
                f"{source}: array shape {a.shape} has no channel axis of size 1, 3 or 4; "
                "expected (H, W), (H, W, C) or (C, H, W)"
            )
    else:
        raise BadInputError(
            f"{source}: array has {a.ndim} dimensions {a.shape}; expected one image as (H, W), (H, W, C) "
            "or (C, H, W); save one image per file"
        )
    if a.shape[0] * a.shape[1] > MAX_PIXELS:
        raise BadInputError(f"{source}: {a.shape[0]}x{a.shape[1]} exceeds the {MAX_PIXELS:,}-pixel limit")
    if a.shape[-1] == 4:
        a = a[..., :3]
        steps.append("4th (alpha) channel dropped")
    return _scale(a, source, steps)


def _scale(a: np.ndarray, source: str | Path, steps: list[str] | None = None) -> np.ndarray:
    """uint8 / 255, uint16 / 65535 (either byte order), bool as 0/1, float kept (must lie in [0, 1])."""
    steps = steps if steps is not None else []
    kind, size = a.dtype.kind, a.dtype.itemsize
    if kind == "u" and size in (1, 2):
        top = 255.0 if size == 1 else 65535.0
        steps.append(f"uint{8 * size} / {top:.0f}")
        return a.astype(np.float32) / np.float32(top)
    if kind == "b":
        return a.astype(np.float32)
    if kind == "f":
        f = a.astype(np.float32)
        if not np.isfinite(f).all():
            raise BadInputError(f"{source}: contains NaN or Inf values; fix or drop the image")
        lo, hi = float(f.min()), float(f.max())
        if lo < -1e-6 or hi > 1.0 + 1e-6:
            raise BadInputError(
                f"{source}: float values span [{lo:.4g}, {hi:.4g}] but must lie in [0, 1]; "
                "rescale them (or save as uint8/uint16)"
            )
        return np.clip(f, 0.0, 1.0)
    raise BadInputError(
        f"{source}: unsupported dtype {a.dtype.name} ({a.dtype.str}); use uint8, uint16, bool or float in [0, 1] "
        "(for CT values or signed data, window them into one of those first)"
    )


def _finish(image: np.ndarray, source: str | Path) -> np.ndarray:
    if image.ndim != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise BadInputError(f"{source}: image has zero size {image.shape}")
    if not np.isfinite(image).all():
        raise BadInputError(f"{source}: contains NaN or Inf values; fix or drop the image")
    return np.ascontiguousarray(image, dtype=np.float32)


def gray_as_rgb(pixels: np.ndarray, lossy: bool) -> str | None:
    """ "exact" when the three channels of ``pixels`` are equal, "within N/255" when they differ by
    at most :data:`GRAY_RGB_TOLERANCE_JPEG` and the format is lossy, else None."""
    if pixels.shape[-1] != 3:
        return None
    diff = max(
        float(np.abs(pixels[..., 0] - pixels[..., 1]).max()),
        float(np.abs(pixels[..., 0] - pixels[..., 2]).max()),
    )
    if diff == 0.0:
        return "exact"
    if lossy and diff <= GRAY_RGB_TOLERANCE_JPEG + 1e-7:
        return f"within {GRAY_RGB_TOLERANCE_JPEG * 255:.0f}/255 (lossy format)"
    return None


def _with_gray_check(info: ReadInfo, pixels: np.ndarray, lossy: bool) -> ReadInfo:
    kind = gray_as_rgb(pixels, lossy)
    if kind is None:
        return info
    return ReadInfo(info.decoder, info.stored, info.steps, kind)


def _has_dicom_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


# ------------------------------------------------------------------ NPY


def _read_npy(path: Path) -> tuple[np.ndarray, ReadInfo]:
    """numpy parses the header (any version, dtype, byte order); memory-mapped, so the size limit
    is checked before any pixel is read. Pickles are never loaded."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as e:
        if "pickle" in str(e).lower() or "object" in str(e).lower():
            raise BadInputError(
                f"{path}: holds Python objects (pickled); refused for safety. "
                "Save a plain numeric array with numpy.save(path, array)"
            ) from e
        raise BadInputError(f"{path}: cannot read the .npy file ({e}); it may be truncated") from e
    except (OSError, EOFError) as e:
        raise BadInputError(f"{path}: not a valid .npy file ({e}); save it with numpy.save") from e
    if not isinstance(array, np.ndarray):  # np.load returns an NpzFile for a zip
        raise BadInputError(f"{path}: not a .npy array (an .npz archive?); save one array with numpy.save")
    shape = array.shape
    pixels = int(np.prod(shape[:2], dtype=np.int64)) if len(shape) >= 2 else 0
    if len(shape) == 3 and shape[-1] not in (1, 3, 4) and shape[0] in (1, 3, 4):
        pixels = int(shape[1]) * int(shape[2])
    if array.nbytes > MAX_NPY_BYTES or pixels > MAX_PIXELS:
        raise BadInputError(
            f"{path}: array shape {tuple(shape)} ({array.nbytes:,} bytes) exceeds the limit of "
            f"{MAX_PIXELS:,} pixels / {MAX_NPY_BYTES:,} bytes per image"
        )
    steps: list[str] = []
    stored = f"NPY {array.dtype.str} {tuple(shape)}"
    try:
        image = _array_to_unit(np.asarray(array), path, steps)
    finally:
        del array  # release the memory map
    return image, ReadInfo(f"numpy {np.__version__}", stored, tuple(steps))


# ------------------------------------------------------------------ Pillow


_PNG_COLOUR_TYPES = {0: "gray", 2: "RGB", 3: "palette", 4: "gray + alpha", 6: "RGBA"}


def _png_color_type(path: Path) -> tuple[int, int] | None:
    """(bit depth, colour type) from a PNG's IHDR, or None for another format."""
    try:
        with open(path, "rb") as f:
            head = f.read(29)
    except OSError:
        return None
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return head[24], head[25]


def _read_pil(path: Path) -> tuple[np.ndarray, ReadInfo]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            warnings.simplefilter("ignore", UserWarning)  # e.g. 'Corrupt EXIF data': reported as an error
            with Image.open(path) as im:
                w, h = im.size
                if w * h > MAX_PIXELS:
                    raise BadInputError(
                        f"{path}: {w}x{h} pixels exceeds the {MAX_PIXELS:,}-pixel limit "
                        "(possible decompression bomb); crop or downscale the image"
                    )
                im.load()
                fmt = im.format or path.suffix.lstrip(".").upper()
                steps: list[str] = []
                orientation = im.getexif().get(0x0112)
                if orientation not in (None, 1):
                    steps.append(f"EXIF orientation {orientation} applied")
                im = ImageOps.exif_transpose(im)
                stored = f"{fmt} mode {im.mode}"
                png = _png_color_type(path) if fmt == "PNG" else None
                if png is not None:
                    stored = f"PNG {png[0]}-bit {_PNG_COLOUR_TYPES.get(png[1], png[1])}"
                    if png[0] == 16 and png[1] in (2, 6):
                        steps.append("Pillow decodes 16-bit RGB at 8-bit precision")
                if png is not None and png[1] == 4 and png[0] == 16:
                    # Pillow decodes 16-bit gray + alpha as RGBA with R = G = B (8-bit precision):
                    # it is gray, whatever the bit depth
                    steps.append("alpha dropped; Pillow decodes 16-bit gray + alpha at 8-bit precision")
                    pixels = np.asarray(im.getchannel("R"), dtype=np.float32)[:, :, None] / 255.0
                else:
                    pixels = _pil_to_array(im, path, steps)
                from PIL import __version__ as pil_version

                return pixels, ReadInfo(f"pillow {pil_version} {fmt}", stored, tuple(steps))
    except BadInputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadInputError(f"{path}: image too large (possible decompression bomb): {e}") from e
    except PermissionError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise BadInputError(
            f"{path}: cannot decode the image ({e}); the file is corrupt or not an image"
        ) from e


def _pil_to_array(im: Image.Image, path: Path, steps: list[str]) -> np.ndarray:
    mode = im.mode
    if mode in ("1", "L"):
        return np.asarray(im.convert("L"), dtype=np.float32)[:, :, None] / 255.0
    if mode in ("LA", "La"):
        steps.append("alpha dropped")
        return np.asarray(im.getchannel("L"), dtype=np.float32)[:, :, None] / 255.0
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        steps.append("uint16 / 65535")
        return np.asarray(im).astype(np.float32)[:, :, None] / 65535.0
    if mode == "I":
        a = np.asarray(im)
        if a.min() < 0 or a.max() > 65535:
            raise BadInputError(
                f"{path}: 32-bit integer image with values in [{a.min()}, {a.max()}]; "
                "save it as 8- or 16-bit, or as a float .npy in [0, 1]"
            )
        steps.append("int32 / 65535")
        return a.astype(np.float32)[:, :, None] / 65535.0
    if mode == "F":
        return _scale(np.asarray(im, dtype=np.float32)[:, :, None], path)
    if mode.startswith("P"):
        steps.append("palette applied")
    if mode in ("RGBA", "RGBa", "PA") or (mode == "P" and "transparency" in im.info):
        steps.append("alpha dropped")
    if mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        steps.append(f"{mode} -> RGB (Pillow)")
    if mode in ("RGB", "RGBA", "RGBa", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    raise BadInputError(f"{path}: unsupported PIL mode {mode!r}; convert the image to 8-bit RGB or gray")


# ------------------------------------------------------------------ TIFF


def _has_tifffile() -> bool:
    try:
        import tifffile  # noqa: F401
    except ImportError:
        return False
    return True


def _read_tiff(path: Path) -> tuple[np.ndarray, ReadInfo]:
    if not _has_tifffile():  # the [tiff] extra is absent: Pillow reads one page, honours Orientation
        pixels, info = _read_pil(path)
        return pixels, _refuse_pil_multipage(path, info)
    from drifa_edge.data.tiff_reader import read_tiff

    result = read_tiff(path, MAX_PIXELS)
    if result is None:  # a page tifffile would return raw (palette, YCbCr, JPEG, CMYK): Pillow renders it
        pixels, info = _read_pil(path)
        return pixels, _refuse_pil_multipage(path, info)
    array, stored, steps, decoder = result
    steps = list(steps)
    image = _array_to_unit(array, path, steps)
    return image, ReadInfo(decoder, stored, tuple(steps))


def _refuse_pil_multipage(path: Path, info: ReadInfo) -> ReadInfo:
    with Image.open(path) as im:
        pages = getattr(im, "n_frames", 1)
    if pages > 1:
        raise BadInputError(
            f"{path}: multi-page TIFF ({pages} pages); drifa-edge reads one image per file and will not "
            "guess which page you mean. Save the page to predict as its own file"
        )
    return info
