"""readers.read_image: every format, and every bad file -> BadInputError naming the file."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from drifa_edge.data import readers
from drifa_edge.data.readers import array_to_image, read_image
from drifa_edge.errors import BadInputError, MissingDependencyError

RNG = np.random.default_rng(0)
RGB8 = RNG.integers(0, 256, (12, 10, 3), dtype=np.uint8)
GRAY16 = RNG.integers(0, 65536, (12, 10), dtype=np.uint16)


def _check(image: np.ndarray, shape: tuple[int, ...]) -> None:
    assert image.shape == shape and image.dtype == np.float32
    assert image.flags.c_contiguous and 0.0 <= image.min() and image.max() <= 1.0


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif"])
def test_lossless_rgb8_exact(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"x{suffix}"
    Image.fromarray(RGB8).save(path)
    image = read_image(path)
    _check(image, (12, 10, 3))
    np.testing.assert_array_equal(image, RGB8.astype(np.float32) / 255)


def test_jpeg_close(tmp_path: Path) -> None:
    smooth = np.tile(np.linspace(0, 255, 32, dtype=np.uint8), (32, 1))
    Image.fromarray(np.stack([smooth] * 3, -1)).save(tmp_path / "x.JPG", quality=95)
    image = read_image(tmp_path / "x.JPG")  # upper-case suffix is accepted
    _check(image, (32, 32, 3))
    assert np.abs(image - smooth[..., None] / 255).max() < 0.05  # JPEG loss on a smooth ramp


def test_gray_and_palette_and_rgba(tmp_path: Path) -> None:
    gray = RGB8[..., 0]
    Image.fromarray(gray).save(tmp_path / "g.png")
    np.testing.assert_array_equal(read_image(tmp_path / "g.png")[..., 0], gray / np.float32(255))

    rgba = np.concatenate([RGB8, np.full((12, 10, 1), 7, np.uint8)], -1)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), RGB8 / np.float32(255))  # alpha dropped

    Image.fromarray(RGB8).convert("P").save(tmp_path / "p.png")
    palette = Image.open(tmp_path / "p.png").convert("RGB")
    np.testing.assert_array_equal(read_image(tmp_path / "p.png"), np.asarray(palette) / np.float32(255))

    Image.fromarray(gray).convert("LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(read_image(tmp_path / "la.png")[..., 0], gray / np.float32(255))


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_gray(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"x{suffix}"
    Image.fromarray(GRAY16).save(path)
    image = read_image(path)
    _check(image, (12, 10, 1))
    np.testing.assert_allclose(image[..., 0], GRAY16 / 65535.0, atol=1e-7)


def test_16bit_rgb_tiff_via_tifffile(tmp_path: Path) -> None:
    tifffile = pytest.importorskip("tifffile")
    data = RNG.integers(0, 65536, (9, 7, 3), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "x.tiff", data, photometric="rgb")
    image = read_image(tmp_path / "x.tiff")
    _check(image, (9, 7, 3))
    np.testing.assert_allclose(image, data / 65535.0, atol=1e-7)


def test_tiff_without_tifffile_uses_pil(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Image.fromarray(GRAY16).save(tmp_path / "g.tif")
    Image.fromarray(RGB8).convert("P").save(tmp_path / "p.tif")  # palette: tifffile would return indices
    palette = np.asarray(Image.open(tmp_path / "p.tif").convert("RGB")) / np.float32(255)
    np.testing.assert_array_equal(read_image(tmp_path / "p.tif"), palette)
    monkeypatch.setattr(readers, "_has_tifffile", lambda: False)
    np.testing.assert_allclose(read_image(tmp_path / "g.tif")[..., 0], GRAY16 / 65535.0, atol=1e-7)
    np.testing.assert_array_equal(read_image(tmp_path / "p.tif"), palette)


def test_npy_variants(tmp_path: Path) -> None:
    np.save(tmp_path / "u8.npy", RGB8)
    np.testing.assert_array_equal(read_image(tmp_path / "u8.npy"), RGB8 / np.float32(255))
    np.save(tmp_path / "u16.npy", GRAY16)
    np.testing.assert_allclose(read_image(tmp_path / "u16.npy")[..., 0], GRAY16 / 65535.0, atol=1e-7)
    f = RNG.random((5, 6)).astype(np.float64)
    np.save(tmp_path / "f.npy", f)
    _check(read_image(tmp_path / "f.npy"), (5, 6, 1))
    np.testing.assert_allclose(read_image(tmp_path / "f.npy")[..., 0], f, atol=1e-7)
    chw = RNG.random((3, 8, 9)).astype(np.float32)
    np.save(tmp_path / "chw.npy", chw)
    np.testing.assert_array_equal(read_image(tmp_path / "chw.npy"), chw.transpose(1, 2, 0))
    np.save(tmp_path / "rgba.npy", RNG.random((4, 4, 4)).astype(np.float32))
    _check(read_image(tmp_path / "rgba.npy"), (4, 4, 3))


def _write_dicom(path: Path, stored: np.ndarray, **attrs) -> None:
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"  # CT image storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    for key, value in attrs.items():
        setattr(ds, key, value)
    ds.PixelData = stored.astype(np.uint16).tobytes()
    pydicom.dcmwrite(path, ds, enforce_file_format=True)


def test_dicom_slope_intercept_window(tmp_path: Path) -> None:
    stored = 400 + np.arange(20, dtype=np.uint16).reshape(4, 5) * 20  # HU -224..536 after the LUT
    _write_dicom(
        tmp_path / "ct.dcm", stored, RescaleSlope=2, RescaleIntercept=-1024, WindowCenter=40, WindowWidth=400
    )
    image = read_image(tmp_path / "ct.dcm")
    _check(image, (4, 5, 1))
    hu = stored * 2.0 - 1024.0  # hand computation: modality LUT, then the DICOM linear window
    lo, hi = 40 - 0.5 - 399 / 2, 40 - 0.5 + 399 / 2
    expected = np.where(hu <= lo, 0.0, np.where(hu > hi, 1.0, (hu - 39.5) / 399 + 0.5))
    np.testing.assert_allclose(image[..., 0], expected, atol=1e-6)
    inside = (expected > 0) & (expected < 1)
    assert inside.sum() >= 5 and (expected == 0).any() and (expected == 1).any()  # the window cuts both ends


def test_dicom_min_max_without_window_and_magic_without_suffix(tmp_path: Path) -> None:
    stored = np.array([[10, 20], [30, 50]], dtype=np.uint16)
    _write_dicom(tmp_path / "scan", stored, RescaleSlope=1, RescaleIntercept=-10)
    image = read_image(tmp_path / "scan")  # no suffix: recognised by the DICM magic
    np.testing.assert_allclose(image[..., 0], (stored - 10.0) / 40.0, atol=1e-7)


def test_dicom_rgb_and_multiframe(tmp_path: Path) -> None:
    rgb = RNG.integers(0, 256, (3, 4, 3), dtype=np.uint8)
    _write_dicom(
        tmp_path / "rgb.dcm",
        np.zeros((3, 4)),
        SamplesPerPixel=3,
        PhotometricInterpretation="RGB",
        PlanarConfiguration=0,
        BitsAllocated=8,
        BitsStored=8,
        HighBit=7,
    )
    import pydicom

    ds = pydicom.dcmread(tmp_path / "rgb.dcm")
    ds.PixelData = rgb.tobytes()
    ds.save_as(tmp_path / "rgb.dcm")
    np.testing.assert_allclose(read_image(tmp_path / "rgb.dcm"), rgb / 255.0, atol=1e-7)
    _write_dicom(tmp_path / "mf.dcm", np.zeros((2, 3, 4)).reshape(6, 4), NumberOfFrames=2, Rows=3)
    with pytest.raises(BadInputError, match="multi-frame"):
        read_image(tmp_path / "mf.dcm")


def test_dicom_monochrome1_inverts(tmp_path: Path) -> None:
    _write_dicom(tmp_path / "m1.dcm", np.array([[0, 10]], np.uint16), PhotometricInterpretation="MONOCHROME1")
    np.testing.assert_array_equal(read_image(tmp_path / "m1.dcm")[..., 0], [[1.0, 0.0]])


def test_missing_pydicom_names_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "x.dcm"
    path.write_bytes(b"\0" * 200)
    monkeypatch.setitem(__import__("sys").modules, "pydicom", None)  # import pydicom -> ImportError
    with pytest.raises(MissingDependencyError, match=r"drifa-edge\[dicom\]"):
        read_image(path)


def _tiny_png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but holds no pixel data (a cheap 'bomb')."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    )


def _bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    bad = {}
    (tmp_path / "empty.png").write_bytes(b"")
    bad["empty"] = (tmp_path / "empty.png", "empty file")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage garbage")
    bad["corrupt png"] = (tmp_path / "corrupt.png", "cannot decode")
    Image.fromarray(RGB8).save(tmp_path / "trunc.jpg")
    data = (tmp_path / "trunc.jpg").read_bytes()
    (tmp_path / "trunc.jpg").write_bytes(data[: len(data) // 2])
    bad["truncated jpeg"] = (tmp_path / "trunc.jpg", "cannot decode")
    (tmp_path / "notes.txt").write_text("hello")
    bad["unknown suffix"] = (tmp_path / "notes.txt", "unknown image type")
    bad["missing"] = (tmp_path / "nope.png", "not found")
    np.save(tmp_path / "nan.npy", np.array([[0.5, np.nan]], dtype=np.float32))
    bad["nan"] = (tmp_path / "nan.npy", "NaN or Inf")
    np.save(tmp_path / "inf.npy", np.array([[0.5, np.inf]], dtype=np.float64))
    bad["inf"] = (tmp_path / "inf.npy", "NaN or Inf")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    bad["pickle"] = (tmp_path / "obj.npy", "pickled")
    np.save(tmp_path / "4d.npy", np.zeros((2, 3, 4, 5), np.uint8))
    bad["4-d"] = (tmp_path / "4d.npy", "4 dimensions")
    np.save(tmp_path / "range.npy", np.full((3, 3), 2.5, np.float32))
    bad["float out of range"] = (tmp_path / "range.npy", r"must lie in \[0, 1\]")
    np.save(tmp_path / "i32.npy", np.zeros((3, 3), np.int32))
    bad["int32"] = (tmp_path / "i32.npy", "unsupported dtype")
    (tmp_path / "bomb.png").write_bytes(_tiny_png_header(60_000, 60_000))
    bad["png bomb"] = (tmp_path / "bomb.png", "pixel limit|decompression bomb")
    with open(tmp_path / "bomb.npy", "wb") as f:  # header claims 100k x 100k, no data follows
        np.lib.format.write_array_header_1_0(
            f, {"descr": "|u1", "fortran_order": False, "shape": (100_000, 100_000)}
        )
    bad["npy bomb"] = (tmp_path / "bomb.npy", "exceeds the limit|truncated")  # header only: truncated
    (tmp_path / "trunc.npy").write_bytes((tmp_path / "nan.npy").read_bytes()[:-3])
    bad["truncated npy"] = (tmp_path / "trunc.npy", "cannot read")
    (tmp_path / "fake.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x01\x02" * 10)
    bad["corrupt dicom"] = (tmp_path / "fake.dcm", "DICOM")
    (tmp_path / "bad.tif").write_bytes(b"II*\x00" + b"\xff" * 40)
    bad["corrupt tiff"] = (tmp_path / "bad.tif", "cannot decode")
    return bad


def test_bad_files_raise_bad_input_naming_the_file(tmp_path: Path) -> None:
    for what, (path, message) in _bad_files(tmp_path).items():
        with pytest.raises(BadInputError, match=message) as info:
            read_image(path)
        assert str(path) in str(info.value), what


def test_pixel_limit_is_configurable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Image.fromarray(RGB8).save(tmp_path / "x.png")
    np.save(tmp_path / "x.npy", RGB8)
    monkeypatch.setattr(readers, "MAX_PIXELS", 100)
    for name in ("x.png", "x.npy"):
        with pytest.raises(BadInputError, match="limit"):
            read_image(tmp_path / name)


def test_array_to_image_shapes() -> None:
    _check(array_to_image(np.zeros((3, 5, 7), np.uint8)), (5, 7, 3))  # CHW
    _check(array_to_image(np.zeros((5, 7, 3), np.uint8)), (5, 7, 3))  # HWC wins when both fit
    _check(array_to_image(np.ones((5, 7), bool)), (5, 7, 1))
    with pytest.raises(BadInputError, match="channel axis"):
        array_to_image(np.zeros((5, 7, 2), np.uint8))
