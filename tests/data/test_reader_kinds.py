"""Inputs that used to be misread (issue 14): each kind read as a viewer shows it, or refused
naming the file. Every expected value is computed independently of the reader."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from drifa_edge.data.readers import GRAY_RGB_TOLERANCE_JPEG, decode_image, read_image
from drifa_edge.errors import BadInputError

RNG = np.random.default_rng(1)


# ------------------------------------------------------------------ DICOM


def _dicom(path: Path, pixels: np.ndarray, **attrs) -> None:
    pydicom = pytest.importorskip("pydicom", minversion="3")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"  # secondary capture
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    bits = 8 * pixels.dtype.itemsize
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    for key, value in attrs.items():
        setattr(ds, key, value)
    ds.PixelData = pixels.tobytes()
    pydicom.dcmwrite(path, ds, enforce_file_format=True)


def _palette_attrs(lut_rgb: np.ndarray) -> dict:
    """Palette Color LUT module for a (3, 256) uint16 table."""
    attrs = {"PhotometricInterpretation": "PALETTE COLOR"}
    for name, table in zip(("Red", "Green", "Blue"), lut_rgb, strict=True):
        attrs[f"{name}PaletteColorLookupTableDescriptor"] = [256, 0, 16]
        attrs[f"{name}PaletteColorLookupTableData"] = table.astype("<u2").tobytes()
    return attrs


@pytest.mark.parametrize("kind", ["inverted", "permuted"])
def test_dicom_palette_color_applies_the_lut(tmp_path: Path, kind: str) -> None:
    indices = RNG.integers(0, 256, (6, 5), dtype=np.uint8)
    if kind == "inverted":  # a gray LUT that inverts: a viewer shows 255 - index
        gray = (255 - np.arange(256)) * 257
        lut = np.stack([gray] * 3)
    else:  # genuine colours: R, G, B from three different permutations
        lut = np.stack([RNG.permutation(256) * 257 for _ in range(3)])
    _dicom(tmp_path / "p.dcm", indices, **_palette_attrs(lut))
    decoded = decode_image(tmp_path / "p.dcm")
    expected = lut[:, indices].transpose(1, 2, 0) / 65535.0  # (H, W, 3) rendered by hand
    np.testing.assert_allclose(decoded.pixels, expected, atol=1e-6)
    assert any("apply_color_lut" in s for s in decoded.info.steps)
    assert decoded.info.gray_as_rgb == ("exact" if kind == "inverted" else None)


def test_dicom_ybr_full_and_planar_rgb(tmp_path: Path) -> None:
    rgb = RNG.integers(0, 256, (4, 6, 3)).astype(np.float64)
    # PS3.3 C.7.6.3.1.2 YBR_FULL (ITU-R BT.601 full range), rounded to 8 bit
    y = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    cb = -0.168736 * rgb[..., 0] - 0.331264 * rgb[..., 1] + 0.5 * rgb[..., 2] + 128
    cr = 0.5 * rgb[..., 0] - 0.418688 * rgb[..., 1] - 0.081312 * rgb[..., 2] + 128
    ybr = np.clip(np.rint(np.stack([y, cb, cr], -1)), 0, 255).astype(np.uint8)
    attrs = {"SamplesPerPixel": 3, "PlanarConfiguration": 0}
    _dicom(tmp_path / "ybr.dcm", ybr, PhotometricInterpretation="YBR_FULL", **attrs)
    decoded = decode_image(tmp_path / "ybr.dcm")
    np.testing.assert_allclose(decoded.pixels * 255, rgb, atol=2.0)  # 8-bit YBR round trip: +-2 levels
    assert any("YBR_FULL -> RGB" in s for s in decoded.info.steps)

    planes = np.ascontiguousarray(rgb.astype(np.uint8).transpose(2, 0, 1))  # RRR..GGG..BBB..
    _dicom(tmp_path / "planar.dcm", planes.reshape(3 * 4, 6)[:4], PhotometricInterpretation="RGB",
           SamplesPerPixel=3, PlanarConfiguration=1)  # fmt: skip
    import pydicom

    ds = pydicom.dcmread(tmp_path / "planar.dcm")
    ds.PixelData = planes.tobytes()
    ds.save_as(tmp_path / "planar.dcm")
    np.testing.assert_array_equal(read_image(tmp_path / "planar.dcm"), rgb.astype(np.float32) / 255)


def test_dicom_voi_lut_sequence_and_sigmoid_window(tmp_path: Path) -> None:
    pydicom = pytest.importorskip("pydicom", minversion="3")
    from pydicom.dataset import Dataset

    stored = np.arange(12, dtype=np.uint16).reshape(3, 4) * 100
    item = Dataset()
    item.LUTDescriptor = [1200, 0, 16]  # 1200 entries from stored value 0, 16-bit output
    table = (65535 - np.arange(1200) * 50).astype(np.uint16)  # a decreasing VOI LUT
    item.add_new(0x00283006, "US", table.tolist())  # LUT Data as US values
    _dicom(tmp_path / "voi.dcm", stored, VOILUTSequence=pydicom.Sequence([item]))
    np.testing.assert_allclose(read_image(tmp_path / "voi.dcm")[..., 0], table[stored] / 65535.0, atol=1e-6)

    _dicom(tmp_path / "sig.dcm", stored, WindowCenter=500, WindowWidth=400, VOILUTFunction="SIGMOID")
    expected = 1.0 / (1.0 + np.exp(-4.0 * (stored - 500.0) / 400.0))  # PS3.3 C.11.2.1.3.1, range [0, 1]
    np.testing.assert_allclose(read_image(tmp_path / "sig.dcm")[..., 0], expected, atol=1e-6)


# ------------------------------------------------------------------ TIFF


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_tiff_orientation_matches_pillow_exif(tmp_path: Path, orientation: int, dtype) -> None:
    tifffile = pytest.importorskip("tifffile")
    top = np.iinfo(dtype).max
    stored = RNG.integers(0, top + 1, (5, 7, 3)).astype(dtype)
    tifffile.imwrite(
        tmp_path / "x.tif", stored, photometric="rgb", extratags=[(274, 3, 1, orientation, True)]
    )
    # the reference: Pillow's exif_transpose of the same pixels carried in a PNG's EXIF
    im = Image.fromarray((stored // (257 if dtype == np.uint16 else 1)).astype(np.uint8))
    exif = Image.Exif()
    exif[0x0112] = orientation
    im.save(tmp_path / "x.png", exif=exif)
    upright = read_image(tmp_path / "x.png")
    image = read_image(tmp_path / "x.tif")
    assert image.shape == upright.shape
    np.testing.assert_allclose(image, upright, atol=1 / 255 if dtype == np.uint16 else 0)  # // 257 truncates


def test_tiff_multipage_refused_with_page_count_and_thumbnail_ignored(tmp_path: Path) -> None:
    tifffile = pytest.importorskip("tifffile")
    page = RNG.integers(0, 256, (8, 8), dtype=np.uint8)
    with tifffile.TiffWriter(tmp_path / "three.tif") as tif:
        for p in (np.zeros_like(page), page, page):
            tif.write(p)
    with pytest.raises(BadInputError, match=r"three\.tif: multi-page TIFF \(3 pages\)"):
        read_image(tmp_path / "three.tif")
    with tifffile.TiffWriter(tmp_path / "thumb.tif") as tif:
        tif.write(page)
        tif.write(page[::2, ::2], subfiletype=1)  # a reduced-resolution copy is not a second page
    np.testing.assert_array_equal(read_image(tmp_path / "thumb.tif")[..., 0], page / np.float32(255))


def test_tiff_miniswhite_16bit_inverted(tmp_path: Path) -> None:
    tifffile = pytest.importorskip("tifffile")
    data = RNG.integers(0, 65536, (4, 5), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "w.tif", data, photometric="miniswhite")
    np.testing.assert_allclose(read_image(tmp_path / "w.tif")[..., 0], (65535 - data) / 65535.0, atol=1e-7)


# ------------------------------------------------------------------ PNG


def _png(path: Path, pixels: np.ndarray, colour_type: int) -> None:
    """A PNG written by hand (Pillow cannot write 16-bit gray + alpha)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    h, w = pixels.shape[:2]
    raw = b"".join(b"\x00" + pixels[r].astype(">u2").tobytes() for r in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )


def test_png_16bit_gray_alpha_is_gray(tmp_path: Path) -> None:
    gray8 = RNG.integers(0, 256, (6, 7), dtype=np.uint16)
    la = np.stack([gray8 * 257, np.full_like(gray8, 65535)], -1)
    _png(tmp_path / "la16.png", la, colour_type=4)
    Image.fromarray(gray8.astype(np.uint8)).save(tmp_path / "g8.png")
    decoded = decode_image(tmp_path / "la16.png")
    assert decoded.pixels.shape == (6, 7, 1) and decoded.info.stored == "PNG 16-bit gray + alpha"
    np.testing.assert_array_equal(decoded.pixels, read_image(tmp_path / "g8.png"))


def test_gray_stored_as_rgb_is_recorded(tmp_path: Path) -> None:
    gray = np.tile(np.linspace(0, 255, 32).astype(np.uint8), (32, 1))
    Image.fromarray(np.stack([gray] * 3, -1)).save(tmp_path / "g.png")
    # a viewer's export of gray: channels differ by a level or two (colour management, chroma noise)
    near = np.stack([gray, np.clip(gray.astype(int) + 1, 0, 255), np.clip(gray.astype(int) - 1, 0, 255)], -1)
    Image.fromarray(near.astype(np.uint8)).save(tmp_path / "near.jpg", quality=90)
    Image.fromarray(near.astype(np.uint8)).save(tmp_path / "near.png")
    colour = np.stack([gray, gray[::-1], gray.T], -1)
    Image.fromarray(colour).save(tmp_path / "c.png")
    Image.fromarray(colour).save(tmp_path / "c.jpg", quality=95)
    assert decode_image(tmp_path / "g.png").info.gray_as_rgb == "exact"
    jpeg = decode_image(tmp_path / "near.jpg")
    spread = np.abs(jpeg.pixels - jpeg.pixels[..., :1]).max()
    assert 0 < spread <= GRAY_RGB_TOLERANCE_JPEG + 1e-7
    assert jpeg.info.gray_as_rgb == "within 3/255 (lossy format)"
    assert decode_image(tmp_path / "near.png").info.gray_as_rgb is None  # lossless: exact or colour
    assert decode_image(tmp_path / "c.png").info.gray_as_rgb is None
    assert decode_image(tmp_path / "c.jpg").info.gray_as_rgb is None


# ------------------------------------------------------------------ NPY


@pytest.mark.parametrize("dtype", ["<u2", ">u2", "|u1", "<f4", ">f4", ">f8", "<f2", "|b1"])
def test_npy_every_promised_dtype_and_byte_order(tmp_path: Path, dtype: str) -> None:
    kind = np.dtype(dtype).kind
    if kind == "u":
        top = np.iinfo(np.dtype(dtype)).max
        values = RNG.integers(0, top + 1, (4, 5))
        expected = values / float(top)
    elif kind == "b":
        values = RNG.random((4, 5)) > 0.5
        expected = values.astype(float)
    else:
        values = RNG.random((4, 5))
        expected = values.astype(dtype).astype(np.float64)
    np.save(tmp_path / "x.npy", np.asarray(values).astype(dtype))
    np.testing.assert_allclose(read_image(tmp_path / "x.npy")[..., 0], expected, atol=1e-7)


@pytest.mark.parametrize(
    ("array", "match"),
    [
        (np.zeros((0, 0), np.float32), r"empty\.npy: empty array of shape \(0, 0\)"),
        (np.zeros((3, 3), ">i4"), r"empty\.npy: unsupported dtype int32 \(>i4\)"),
        (np.zeros((3, 3), np.complex64), r"empty\.npy: unsupported dtype complex64"),
    ],
)
def test_npy_refusals_name_file_and_dtype(tmp_path: Path, array: np.ndarray, match: str) -> None:
    np.save(tmp_path / "empty.npy", array)
    with pytest.raises(BadInputError, match=match):
        read_image(tmp_path / "empty.npy")
