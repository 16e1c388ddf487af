"""TIFF through tifffile: one page, its photometric interpretation and Orientation tag honoured
at every bit depth (Pillow drops 16-bit RGB to 8 bit and tifffile returns pixels as stored).

- Multi-page files are refused, naming the page count: reading page 0 silently gave confident
  answers on a blank first page. Reduced-resolution pages (thumbnails, NewSubfileType bit 0)
  do not count as pages.
- MINISBLACK and RGB pages are read here, MINISWHITE is inverted (max - value); extra samples
  beyond gray or RGB (alpha) are dropped. Pages tifffile would return raw (palette, YCbCr,
  CMYK, JPEG-in-TIFF) are left to Pillow, which renders them and honours Orientation itself.
- Orientation (tag 274, values as EXIF) is applied to the array exactly as Pillow's
  ``ImageOps.exif_transpose`` does for PNG/JPEG, so a rotated TIFF reads upright.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from drifa_edge.errors import BadInputError

ORIENTATION_TAG = 274


def orient(array: np.ndarray, orientation: int) -> np.ndarray:
    """(H, W, ...) as stored -> upright, for TIFF/EXIF Orientation 1-8 (TIFF 6.0, p. 36).

    The same operations as Pillow's exif_transpose: 2 mirror left-right, 3 rotate 180,
    4 mirror top-bottom, 5 transpose, 6 rotate 90 clockwise, 7 transverse, 8 rotate 90
    counter-clockwise."""
    if orientation == 2:
        return array[:, ::-1]
    if orientation == 3:
        return array[::-1, ::-1]
    if orientation == 4:
        return array[::-1]
    if orientation == 5:
        return np.swapaxes(array, 0, 1)
    if orientation == 6:
        return np.rot90(array, k=-1)
    if orientation == 7:
        return np.swapaxes(array, 0, 1)[::-1, ::-1]
    if orientation == 8:
        return np.rot90(array, k=1)
    return array


def read_tiff(path: Path, max_pixels: int) -> tuple[np.ndarray, str, list[str], str] | None:
    """(pixels as stored but upright and gray/RGB, what was stored, steps, decoder), or None when
    Pillow should render the page. Raises :class:`BadInputError` naming the file."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            pages = [p for p in tif.pages if not getattr(p, "is_reduced", False)]
            if len(pages) > 1:
                raise BadInputError(
                    f"{path}: multi-page TIFF ({len(pages)} pages); drifa-edge reads one image per file "
                    "and will not guess which page you mean. Save the page to predict as its own file"
                )
            page = tif.pages[0]
            shape = tuple(page.shape)
            if int(np.prod(shape[:2])) > max_pixels:
                raise BadInputError(f"{path}: TIFF page {shape} exceeds the {max_pixels:,}-pixel limit")
            photometric = page.photometric
            P = tifffile.PHOTOMETRIC
            if photometric not in (P.MINISBLACK, P.MINISWHITE, P.RGB) or page.compression == 7:
                return None  # palette, YCbCr, CMYK, JPEG: Pillow renders it
            array = page.asarray()
            tag = page.tags.get(ORIENTATION_TAG)
            orientation = int(tag.value) if tag is not None else 1
            bits = int(page.bitspersample)
            samples = int(page.samplesperpixel)
            planar = int(page.planarconfig)
    except BadInputError:
        raise
    except PermissionError:
        raise
    except Exception as e:  # tifffile raises many types for damaged or exotic files; Pillow may cope
        try:
            from PIL import Image

            with Image.open(path) as im:
                im.load()
        except Exception:
            raise BadInputError(
                f"{path}: cannot decode the TIFF ({type(e).__name__}: {e}); the file is corrupt"
            ) from e
        return None
    name = photometric.name
    stored = f"TIFF {name} {bits}-bit x {samples}"
    steps: list[str] = []
    if array.ndim == 3 and planar == 2 and array.shape[0] == samples:
        array = np.moveaxis(array, 0, -1)  # separate planes (S, H, W) -> (H, W, S)
        steps.append("planar configuration 2 -> interleaved")
    keep = 1 if photometric != P.RGB else 3
    if array.ndim == 3 and array.shape[-1] > keep:
        array = array[..., :keep]
        steps.append(f"{samples - keep} extra sample(s) (alpha) dropped")
    if photometric == P.MINISWHITE:
        if array.dtype.kind == "b":
            array = ~array
        elif array.dtype.kind == "u":
            array = np.iinfo(array.dtype).max - array
        elif array.dtype.kind == "f":
            array = 1.0 - array
        steps.append("MINISWHITE inverted")
    if orientation != 1:
        array = orient(array, orientation)
        steps.append(f"Orientation {orientation} applied")
    return np.ascontiguousarray(array), stored, steps, f"tifffile {tifffile.__version__}"
