"""Read one image file into an (H, W, C) float32 array in [0, 1], C = 1 (gray) or 3 (RGB).

Formats: PNG, JPEG, BMP, GIF, TIFF (8/16 bit; via tifffile when installed), NPY and DICOM.
numpy and PIL only at import; tifffile and pydicom are imported when a file needs them.
Every failure is a :class:`BadInputError` naming the file and what to do, so a batch can
report the file and go on. Limits guard against decompression bombs and absurd arrays.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from drifa_edge.errors import BadInputError, missing_dependency

MAX_PIXELS = 50_000_000  # per image (H * W); a 7,000 x 7,000 slide crop still fits
MAX_NPY_BYTES = 1 << 30  # 1 GiB of array data

PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
TIFF_SUFFIXES = (".tif", ".tiff")
NPY_SUFFIXES = (".npy",)
DICOM_SUFFIXES = (".dcm", ".dicom")
IMAGE_SUFFIXES = PIL_SUFFIXES + TIFF_SUFFIXES + NPY_SUFFIXES + DICOM_SUFFIXES


def read_image(path: str | Path) -> np.ndarray:
    """Decode ``path`` into (H, W, C) float32 in [0, 1]; see the module docstring."""
    path = Path(path)
    if not path.exists():
        raise BadInputError(f"{path}: file not found; check the path (relative paths start at {Path.cwd()})")
    if not path.is_file():
        raise BadInputError(f"{path}: is a directory or special file, not an image file")
    if path.stat().st_size == 0:
        raise BadInputError(f"{path}: empty file (0 bytes); re-copy or re-export the image")
    suffix = path.suffix.lower()
    if suffix in NPY_SUFFIXES:
        image = _read_npy(path)
    elif suffix in DICOM_SUFFIXES or _has_dicom_magic(path):
        image = _read_dicom(path)
    elif suffix in TIFF_SUFFIXES:
        image = _read_tiff(path)
    elif suffix in PIL_SUFFIXES:
        image = _read_pil(path)
    else:
        raise BadInputError(
            f"{path}: unknown image type {suffix or '(no extension)'!r}; "
            f"supported: {', '.join(IMAGE_SUFFIXES)}; convert the file to PNG or NPY"
        )
    return _finish(image, path)


def array_to_image(array: np.ndarray, source: str | Path = "<array>") -> np.ndarray:
    """Turn a 2-D/3-D uint8, uint16, bool or float array into (H, W, C) float32 in [0, 1].

    (C, H, W) with C in 1, 3, 4 is transposed; a 4th (alpha) channel is dropped. Float data must be
    finite and already in [0, 1]. Used for NPY files and in-memory arrays (npz datasets)."""
    a = np.asarray(array)
    if a.ndim == 2:
        a = a[:, :, None]
    elif a.ndim == 3:
        if a.shape[-1] not in (1, 3, 4) and a.shape[0] in (1, 3, 4):
            a = np.transpose(a, (1, 2, 0))
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
    return _finish(_scale(a, source), source)


def _scale(a: np.ndarray, source: str | Path) -> np.ndarray:
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    if a.dtype == np.uint16:
        return a.astype(np.float32) / 65535.0
    if a.dtype == np.bool_:
        return a.astype(np.float32)
    if np.issubdtype(a.dtype, np.floating):
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
        f"{source}: unsupported dtype {a.dtype}; use uint8, uint16 or float in [0, 1] "
        "(for CT values, window them first)"
    )


def _finish(image: np.ndarray, source: str | Path) -> np.ndarray:
    if not np.isfinite(image).all():
        raise BadInputError(f"{source}: contains NaN or Inf values; fix or drop the image")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise BadInputError(f"{source}: image has zero size {image.shape}")
    return np.ascontiguousarray(image, dtype=np.float32)


def _has_dicom_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def _read_npy(path: Path) -> np.ndarray:
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    except (ValueError, OSError, EOFError) as e:
        raise BadInputError(f"{path}: not a valid .npy file ({e}); save it with numpy.save") from e
    if dtype.hasobject:
        raise BadInputError(
            f"{path}: holds Python objects (pickled); refused for safety. "
            "Save a plain numeric array with numpy.save(path, array)"
        )
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    pixels = int(np.prod(shape[:2], dtype=np.int64)) if len(shape) >= 2 else 0
    if len(shape) == 3 and shape[-1] not in (1, 3, 4) and shape[0] in (1, 3, 4):
        pixels = int(shape[1]) * int(shape[2])
    if nbytes > MAX_NPY_BYTES or pixels > MAX_PIXELS:
        raise BadInputError(
            f"{path}: array shape {tuple(shape)} ({nbytes:,} bytes) exceeds the limit of "
            f"{MAX_PIXELS:,} pixels / {MAX_NPY_BYTES:,} bytes per image"
        )
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise BadInputError(f"{path}: cannot read the .npy file ({e}); it may be truncated") from e
    return array_to_image(array, path)


def _read_pil(path: Path) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            warnings.simplefilter(
                "ignore", UserWarning
            )  # e.g. 'Corrupt EXIF data': reported as an error below
            with Image.open(path) as im:
                w, h = im.size
                if w * h > MAX_PIXELS:
                    raise BadInputError(
                        f"{path}: {w}x{h} pixels exceeds the {MAX_PIXELS:,}-pixel limit "
                        "(possible decompression bomb); crop or downscale the image"
                    )
                im.load()
                ImageOps.exif_transpose(im, in_place=True)  # phone/dermatoscope photos carry an orientation
                return _pil_to_array(im, path)
    except BadInputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadInputError(f"{path}: image too large (possible decompression bomb): {e}") from e
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise BadInputError(
            f"{path}: cannot decode the image ({e}); the file is corrupt or not an image"
        ) from e


def _pil_to_array(im: Image.Image, path: Path) -> np.ndarray:
    mode = im.mode
    if mode in ("1", "L"):
        return np.asarray(im.convert("L"), dtype=np.float32)[:, :, None] / 255.0
    if mode == "LA":
        return np.asarray(im.getchannel("L"), dtype=np.float32)[:, :, None] / 255.0
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        return np.asarray(im).astype(np.float32)[:, :, None] / 65535.0
    if mode == "I":
        a = np.asarray(im)
        if a.min() < 0 or a.max() > 65535:
            raise BadInputError(
                f"{path}: 32-bit integer image with values in [{a.min()}, {a.max()}]; "
                "save it as 8- or 16-bit, or as a float .npy in [0, 1]"
            )
        return a.astype(np.float32)[:, :, None] / 65535.0
    if mode == "F":
        return _scale(np.asarray(im, dtype=np.float32)[:, :, None], path)
    if mode in ("RGB", "RGBA", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "RGBX", "La"):
        return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    raise BadInputError(f"{path}: unsupported PIL mode {mode!r}; convert the image to 8-bit RGB or gray")


def _has_tifffile() -> bool:
    try:
        import tifffile  # noqa: F401
    except ImportError:
        return False
    return True


def _read_tiff(path: Path) -> np.ndarray:
    """tifffile for plain gray/RGB pages (exact at 16 bit, where PIL reduces RGB to 8 bit);
    PIL for palette, YCbCr, JPEG-compressed and other pages tifffile would return raw."""
    if not _has_tifffile():
        return _read_pil(path)
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            shape = tuple(page.shape)
            if int(np.prod(shape[:2])) > MAX_PIXELS:
                raise BadInputError(f"{path}: TIFF page {shape} exceeds the {MAX_PIXELS:,}-pixel limit")
            if page.photometric not in (tifffile.PHOTOMETRIC.MINISBLACK, tifffile.PHOTOMETRIC.RGB):
                return _read_pil(path)
            array = page.asarray()
    except BadInputError:
        raise
    except Exception as e:  # tifffile raises many types for damaged or exotic files; PIL may still cope
        try:
            return _read_pil(path)
        except BadInputError:
            raise BadInputError(
                f"{path}: cannot decode the TIFF ({type(e).__name__}: {e}); the file is corrupt"
            ) from e
    return array_to_image(array, path)


def _read_dicom(path: Path) -> np.ndarray:
    try:
        import pydicom
    except ImportError as e:
        raise missing_dependency("pydicom", "dicom") from e
    try:
        ds = pydicom.dcmread(path, force=True, defer_size="1 MB")
        rows, cols = int(ds.Rows), int(ds.Columns)
    except Exception as e:  # pydicom raises many types for damaged files
        raise BadInputError(f"{path}: cannot read the DICOM header ({type(e).__name__}: {e})") from e
    if rows * cols > MAX_PIXELS:
        raise BadInputError(f"{path}: {cols}x{rows} pixels exceeds the {MAX_PIXELS:,}-pixel limit")
    if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
        raise BadInputError(
            f"{path}: multi-frame DICOM ({ds.NumberOfFrames} frames); export one frame per file"
        )
    try:
        pixels = ds.pixel_array
    except Exception as e:
        raise BadInputError(
            f"{path}: cannot decode the DICOM pixel data ({type(e).__name__}: {e}); compressed transfer "
            "syntaxes need a decoder such as pylibjpeg or gdcm"
        ) from e
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
    if pixels.ndim == 3 and pixels.shape[-1] == 3:
        bits = int(getattr(ds, "BitsStored", 8) or 8)
        if photometric.startswith("YBR") and int(pydicom.__version__.split(".")[0]) < 3:
            # pydicom >= 3 already returns RGB for YBR data; 2.x returns YBR
            from pydicom.pixel_data_handlers.util import convert_color_space

            pixels = convert_color_space(pixels, photometric, "RGB")
        return pixels.astype(np.float32) / float(2**bits - 1)
    if pixels.ndim != 2:
        raise BadInputError(f"{path}: DICOM pixel array has shape {pixels.shape}; expected one 2-D frame")
    return dicom_to_unit(
        pixels,
        slope=float(getattr(ds, "RescaleSlope", 1.0) or 1.0),
        intercept=float(getattr(ds, "RescaleIntercept", 0.0) or 0.0),
        center=_first(getattr(ds, "WindowCenter", None)),
        width=_first(getattr(ds, "WindowWidth", None)),
        invert=photometric == "MONOCHROME1",
    )[:, :, None]


def _first(value) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value[0]) if hasattr(value, "__len__") and not isinstance(value, str) else float(value)
    except (TypeError, ValueError, IndexError):
        return None


def dicom_to_unit(
    stored: np.ndarray,
    slope: float = 1.0,
    intercept: float = 0.0,
    center: float | None = None,
    width: float | None = None,
    invert: bool = False,
) -> np.ndarray:
    """Stored values -> [0, 1]: modality LUT (slope, intercept), then the DICOM linear VOI window
    (PS3.3 C.11.2.1.2) when center/width are given, else min-max over the image."""
    x = stored.astype(np.float64) * slope + intercept
    if center is not None and width is not None and width > 1:
        y = np.clip((x - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)
    elif center is not None and width == 1:
        y = (x > center - 0.5).astype(np.float64)  # a one-value window is a threshold
    else:
        lo, hi = float(x.min()), float(x.max())
        y = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    if invert:
        y = 1.0 - y
    return y.astype(np.float32)
