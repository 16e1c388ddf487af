"""DICOM through pydicom >= 3: the image a DICOM viewer shows, as (H, W, C) in [0, 1].

- Colour: ``ds.pixel_array`` already returns RGB for YBR_FULL / YBR_FULL_422 and interleaves
  planar configuration 1; PALETTE COLOR goes through ``apply_color_lut`` (the indices are never
  used as gray values). RGB output is divided by the largest value its bit depth holds
  (the palette LUT's descriptor, else Bits Stored).
- Gray (MONOCHROME1/2): ``apply_modality_lut`` (Modality LUT Sequence, or rescale
  slope/intercept), then ``apply_voi_lut`` (VOI LUT Sequence, or the first Window
  Center/Width with its VOI LUT Function: LINEAR, LINEAR_EXACT, SIGMOID) scaled by the
  output range pydicom maps to; without a VOI the image's own min-max. MONOCHROME1 is
  inverted last (PS3.3 C.7.6.3.1.2).
- Multi-frame files are refused (one frame per file); a missing or undecodable Pixel Data
  names the file and the decoder to install.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from drifa_edge.data.readers import ReadInfo
from drifa_edge.errors import BadInputError, missing_dependency


def read_dicom(path: Path, max_pixels: int) -> tuple[np.ndarray, ReadInfo]:
    """(H, W, C) float32 in [0, 1] and how it was read; raises :class:`BadInputError`."""
    try:
        import pydicom
        from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut
    except ImportError as e:
        raise missing_dependency("pydicom>=3", "dicom") from e
    try:
        ds = pydicom.dcmread(path, force=True, defer_size="1 MB")
        rows, cols = int(ds.Rows), int(ds.Columns)
    except PermissionError:
        raise
    except Exception as e:  # pydicom raises many types for damaged files
        raise BadInputError(f"{path}: cannot read the DICOM header ({type(e).__name__}: {e})") from e
    if rows * cols > max_pixels:
        raise BadInputError(f"{path}: {cols}x{rows} pixels exceeds the {max_pixels:,}-pixel limit")
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames > 1:
        raise BadInputError(f"{path}: multi-frame DICOM ({frames} frames); export one frame per file")
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise BadInputError(f"{path}: DICOM file without Pixel Data (a report or structured document?)")
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper().strip()
    try:
        pixels = ds.pixel_array
    except Exception as e:
        raise BadInputError(
            f"{path}: cannot decode the DICOM pixel data ({type(e).__name__}: {e}); compressed transfer "
            "syntaxes need a decoder such as pylibjpeg or gdcm"
        ) from e
    bits = int(getattr(ds, "BitsStored", 8) or 8)
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    stored = f"DICOM {photometric} {bits}-bit" + (f", {syntax.name}" if syntax is not None else "")
    decoder = f"pydicom {pydicom.__version__}"
    steps: list[str] = []
    try:
        if photometric == "PALETTE COLOR":
            rgb = apply_color_lut(pixels, ds)[..., :3]
            steps.append("palette colour LUT applied (apply_color_lut)")
            top = float(np.iinfo(rgb.dtype).max) if rgb.dtype.kind == "u" else float(rgb.max() or 1)
            return _unit(rgb / top), ReadInfo(decoder, stored, tuple(steps))
        if pixels.ndim == 3 and pixels.shape[-1] == 3:
            if photometric.startswith("YBR"):
                steps.append(f"{photometric} -> RGB (pydicom)")
            if int(getattr(ds, "PlanarConfiguration", 0) or 0) == 1:
                steps.append("planar configuration 1 -> interleaved (pydicom)")
            return _unit(pixels.astype(np.float64) / float(2**bits - 1)), ReadInfo(
                decoder, stored, tuple(steps)
            )
        if pixels.ndim != 2:
            raise BadInputError(f"{path}: DICOM pixel array has shape {pixels.shape}; expected one 2-D frame")
        if photometric not in ("MONOCHROME1", "MONOCHROME2"):
            raise BadInputError(
                f"{path}: photometric interpretation {photometric!r} with one sample per pixel is not "
                "supported; convert the image to MONOCHROME2 or RGB"
            )
        gray = _gray(ds, pixels, apply_modality_lut, apply_voi_lut, steps)
    except BadInputError:
        raise
    except Exception as e:  # malformed LUTs or window values
        raise BadInputError(
            f"{path}: cannot apply the file's lookup tables ({type(e).__name__}: {e}); "
            "the LUT, window or rescale attributes are malformed"
        ) from e
    if photometric == "MONOCHROME1":
        gray = 1.0 - gray
        steps.append("MONOCHROME1 inverted")
    return _unit(gray)[:, :, None], ReadInfo(decoder, stored, tuple(steps))


def _gray(ds, pixels: np.ndarray, apply_modality_lut, apply_voi_lut, steps: list[str]) -> np.ndarray:
    """Modality LUT, then the VOI (LUT or window) mapped to [0, 1], or min-max without a VOI."""
    if ds.get("ModalityLUTSequence"):
        steps.append("Modality LUT Sequence applied")
    elif "RescaleSlope" in ds or "RescaleIntercept" in ds:
        steps.append(
            f"rescale slope {float(ds.get('RescaleSlope', 1) or 1):g}, "
            f"intercept {float(ds.get('RescaleIntercept', 0) or 0):g}"
        )
    if "RescaleSlope" in ds and "RescaleIntercept" not in ds:
        ds.RescaleIntercept = 0  # pydicom applies rescale only when both are present
    if "RescaleIntercept" in ds and "RescaleSlope" not in ds:
        ds.RescaleSlope = 1
    x = apply_modality_lut(pixels, ds)  # integers stay integers: a VOI LUT indexes with them
    voi_lut = bool(ds.get("VOILUTSequence"))
    window = ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None
    if voi_lut:
        bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        y = apply_voi_lut(x, ds).astype(np.float64) / float(2**bits - 1)
        steps.append("VOI LUT Sequence applied (apply_voi_lut)")
        return y
    if window:
        function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
        with np.errstate(over="ignore"):
            # pydicom maps the window onto [y_min, y_max]; probing far below and above gives them
            y_min, y_max = apply_voi_lut(np.array([-1e300, 1e300]), ds)
            y = apply_voi_lut(x, ds)
        center, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
        steps.append(f"window center {center:g} width {width:g} {function} (apply_voi_lut)")
        return (np.asarray(y, np.float64) - y_min) / (y_max - y_min)
    x = np.asarray(x, dtype=np.float64)
    lo, hi = float(x.min()), float(x.max())
    steps.append("no VOI in the file: min-max scaled")
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)


def _first(value) -> float:
    return float(value[0]) if hasattr(value, "__len__") and not isinstance(value, str) else float(value)


def _unit(x: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(x, dtype=np.float32), 0.0, 1.0)
