"""Issue 14 end to end: every kind of input read right or refused, recorded per task, and the
CLI survives any user text. The model is the tiny torch checkpoint of conftest (derm RGB,
blood gray, 32 px)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from inference_helpers import write_good_case, write_png
from PIL import Image

from drifa_edge.artifact.card import read_card
from drifa_edge.errors import ConfigError
from drifa_edge.inference.case_inputs import read_task_input
from drifa_edge.inference.engine import EngineConfig
from drifa_edge.inference.manifest import Case, read_manifest
from drifa_edge.inference.predict import predict_cases
from drifa_edge.inference.writers import read_jsonl
from drifa_edge.runtimes.base import RuntimeOptions

pytest.importorskip("torch")

TASKS = ("derm", "blood")
FAST = {"options": RuntimeOptions(threads=1), "engine_cfg": EngineConfig(samples=4, seed=0)}
RNG = np.random.default_rng(7)
GRAY = (RNG.random((36, 36)) * 255).astype(np.uint8)
RGB = (RNG.random((40, 44, 3)) * 255).astype(np.uint8)


def _palette_dicom(path: Path, rendered: np.ndarray) -> None:
    """An 8-bit PALETTE COLOR DICOM whose LUT inverts: stored indices = 255 - rendered."""
    pydicom = pytest.importorskip("pydicom", minversion="3")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = rendered.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "PALETTE COLOR"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    lut = ((255 - np.arange(256)) * 257).astype("<u2").tobytes()
    for name in ("Red", "Green", "Blue"):
        setattr(ds, f"{name}PaletteColorLookupTableDescriptor", [256, 0, 16])
        setattr(ds, f"{name}PaletteColorLookupTableData", lut)
    ds.PixelData = (255 - rendered).astype(np.uint8).tobytes()
    pydicom.dcmwrite(path, ds, enforce_file_format=True)


def _rotated_tiff(path: Path, upright: np.ndarray) -> None:
    """The image stored rotated with Orientation = 6 (a viewer shows it upright)."""
    tifffile = pytest.importorskip("tifffile")
    stored = np.ascontiguousarray(np.rot90(upright, k=1))  # 6 = rotate 90 CW to display
    tifffile.imwrite(path, stored, photometric="rgb", extratags=[(274, 3, 1, 6, True)])


def _probabilities(checkpoint: Path, case: Case, out: Path) -> dict:
    s = predict_cases(checkpoint, [case], out, **FAST)
    assert s.ok == 1, s.errors
    return read_jsonl(out)[0]


@pytest.mark.parametrize("kind", ["dicom_palette", "tiff_orientation", "gray_as_rgb", "gray16_alpha"])
def test_same_probabilities_as_the_reference_rendering(checkpoint, tmp_path, kind) -> None:
    derm_ref, blood_ref = write_png(tmp_path / "derm.png", RGB / 255.0), tmp_path / "blood.png"
    Image.fromarray(GRAY).save(blood_ref)
    derm, blood = derm_ref, blood_ref
    if kind == "dicom_palette":
        blood = tmp_path / "blood.dcm"
        _palette_dicom(blood, GRAY)
    elif kind == "tiff_orientation":
        derm = tmp_path / "derm.tif"
        _rotated_tiff(derm, RGB)
    elif kind == "gray_as_rgb":
        blood = tmp_path / "blood_rgb.png"
        Image.fromarray(np.stack([GRAY] * 3, -1)).save(blood)
    else:  # 16-bit gray + alpha PNG, written by hand (Pillow cannot)
        import struct
        import zlib

        blood = tmp_path / "blood16la.png"
        la = np.stack([GRAY.astype(np.uint16) * 257, np.full(GRAY.shape, 65535, np.uint16)], -1)
        raw = b"".join(b"\0" + row.astype(">u2").tobytes() for row in la)

        def chunk(k: bytes, d: bytes) -> bytes:
            return struct.pack(">I", len(d)) + k + d + struct.pack(">I", zlib.crc32(k + d))

        ihdr = struct.pack(">IIBBBBB", 36, 36, 16, 4, 0, 0, 0)
        blood.write_bytes(
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b"")
        )
    card = read_card(checkpoint, verify=False)
    for task, path, ref in (("derm", derm, derm_ref), ("blood", blood, blood_ref)):
        np.testing.assert_array_equal(
            read_task_input(path, task, card).array, read_task_input(ref, task, card).array
        )
    got = _probabilities(checkpoint, Case("c", {"derm": derm, "blood": blood}), tmp_path / "got.jsonl")
    want = _probabilities(
        checkpoint, Case("c", {"derm": derm_ref, "blood": blood_ref}), tmp_path / "want.jsonl"
    )
    assert got["tasks"] == want["tasks"]
    steps = " | ".join(got["read"]["derm"]["steps"] + got["read"]["blood"]["steps"])
    expected_step = {
        "dicom_palette": "apply_color_lut",
        "tiff_orientation": "Orientation 6 applied",
        "gray_as_rgb": "gray stored as RGB (channels equal): read as gray",
        "gray16_alpha": "alpha dropped",
    }[kind]
    assert expected_step in steps


def test_genuine_colour_still_refused_for_a_gray_task(checkpoint, tmp_path) -> None:
    d, _ = write_good_case(tmp_path, "x", seed=0)
    colour = write_png(tmp_path / "colour.png", RNG.random((36, 36, 3)))
    s = predict_cases(checkpoint, [Case("c", {"derm": d, "blood": colour})], tmp_path / "p.jsonl", **FAST)
    assert s.failed == 1 and "colour.png: RGB image, the model takes gray" in s.errors[0][1]


@pytest.mark.parametrize(
    ("shape", "why"),
    [
        ((1, 1), "too small: 1x1 px"),
        ((1, 3200), "extreme aspect ratio 3.2e\\+03:1"),
        ((2, 3), "too small: 3x2"),
    ],
)
def test_degenerate_images_are_referred_or_refused(checkpoint, tmp_path, shape, why) -> None:
    d, _ = write_good_case(tmp_path, "x", seed=0)
    tiny = write_png(tmp_path / "tiny.png", RNG.random(shape))
    case = Case("c", {"derm": d, "blood": tiny})
    s = predict_cases(checkpoint, [case], tmp_path / "refer.jsonl", **FAST)
    record = read_jsonl(tmp_path / "refer.jsonl")[0]
    blood = record["tasks"]["blood"]
    assert s.ok == 1 and s.quality_referred == 1
    assert blood["refer"] is True and blood["referral"]["reason"] == "input_quality"
    assert any(pytest.importorskip("re").search(why, i) for i in blood["referral"]["input_quality"])
    assert record["read"]["blood"]["input_quality"]["ok"] is False
    assert record["read"]["derm"]["input_quality"] == {"ok": True, "issues": []}
    assert record["tasks"]["derm"]["referral"]["reason"] != "input_quality"
    s = predict_cases(checkpoint, [case], tmp_path / "refuse.jsonl", quality_action="refuse", **FAST)
    assert (
        s.failed == 1 and s.errors[0][1].startswith("input_quality: blood: ") and "tiny.png" in s.errors[0][1]
    )


def test_blank_page_referred_and_csv_shows_the_reason(checkpoint, tmp_path) -> None:
    d, _ = write_good_case(tmp_path, "x", seed=0)
    blank = write_png(tmp_path / "blank.png", np.full((40, 40), 1.0))
    s = predict_cases(
        checkpoint, [Case("c", {"derm": d, "blood": blank})], tmp_path / "p.csv", fmt="csv", **FAST
    )
    assert s.quality_referred == 1
    import csv

    row = next(csv.DictReader(open(tmp_path / "p.csv", encoding="utf-8")))
    assert row["blood_refer"] == "True" and row["blood_refer_reason"] == "input_quality"


def test_resume_with_other_settings_is_refused_naming_the_difference(checkpoint, tmp_path) -> None:
    d, b = write_good_case(tmp_path, "x", seed=0)
    cases = [Case("a", {"derm": d, "blood": b}), Case("b", {"derm": d, "blood": b})]
    out = tmp_path / "p.jsonl"
    predict_cases(checkpoint, cases[:1], out, **FAST)
    with pytest.raises(ConfigError, match=r"T \(--samples\): file 4, this run 5") as info:
        predict_cases(
            checkpoint, cases, out, resume=True, options=FAST["options"], engine_cfg=EngineConfig(samples=5)
        )
    assert "seed policy" not in str(info.value)
    with pytest.raises(
        ConfigError, match=r"seed policy: file \"per-case \(seed, case_id\), seed 0\", this run \"unseeded\""
    ):
        predict_cases(
            checkpoint,
            cases,
            out,
            resume=True,
            options=FAST["options"],
            engine_cfg=EngineConfig(samples=4, seed=None),
        )
    with pytest.raises(ConfigError, match="input-quality action"):
        predict_cases(checkpoint, cases, out, resume=True, quality_action="refuse", **FAST)
    s = predict_cases(checkpoint, cases, out, resume=True, **FAST)  # same settings: goes on
    assert (s.skipped, s.ok) == (1, 1)
    assert {r["seed_policy"] for r in read_jsonl(out)} == {"per-case (seed, case_id), seed 0"}


def test_duplicate_case_id_names_the_files_own_lines(tmp_path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("case_id,derm,blood\n\nA,a.png,b.png\n\n\nB,a.png,b.png\nA,c.png,d.png\n")
    with pytest.raises(ConfigError, match="'A' appears on lines 3 and 7"):
        read_manifest(path, TASKS)


# ------------------------------------------------------------------ the CLI, every kind at once


def test_cli_over_a_manifest_mixing_every_kind(checkpoint, tmp_path) -> None:
    d, b = write_good_case(tmp_path, "good", seed=1)
    Image.fromarray(GRAY).save(tmp_path / "scan [1].png")
    _palette_dicom(tmp_path / "palette.dcm", GRAY)
    _rotated_tiff(tmp_path / "rot6.tif", RGB)
    Image.fromarray(np.stack([GRAY] * 3, -1)).save(tmp_path / "gray_rgb.png")
    np.save(tmp_path / "be16.npy", (GRAY.astype(np.uint16) * 257).astype(">u2"))
    np.save(tmp_path / "empty.npy", np.zeros((0, 0), np.float32))
    tifffile = pytest.importorskip("tifffile")
    with tifffile.TiffWriter(tmp_path / "pages.tif") as tif:
        for page in (np.zeros_like(GRAY), GRAY, GRAY):
            tif.write(page)
    write_png(tmp_path / "one.png", RNG.random((1, 1)))
    write_png(tmp_path / "strip.png", RNG.random((1, 3200)))
    write_png(tmp_path / "blank.png", np.zeros((40, 40)))
    rows = {
        "good": (d.name, b.name, "ok"),
        "pt[bold]7": (d.name, "scan [1].png", "ok"),
        "palette": (d.name, "palette.dcm", "ok"),
        "rot6": ("rot6.tif", b.name, "ok"),
        "gray_rgb": (d.name, "gray_rgb.png", "ok"),
        "be16": (d.name, "be16.npy", "ok"),
        "closing[/red]tag": (d.name, "empty.npy", "error"),
        "pages": (d.name, "pages.tif", "error"),
        "missing[2]": (d.name, "scan[red]missing.png", "error"),
        "one": (d.name, "one.png", "quality"),
        "strip": (d.name, "strip.png", "quality"),
        "blank": (d.name, "blank.png", "quality"),
    }
    manifest = tmp_path / "cases.csv"
    manifest.write_text("case_id,derm,blood\n" + "".join(f"{c},{x},{y}\n" for c, (x, y, _) in rows.items()))
    out = tmp_path / "out.jsonl"
    env = dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="250")
    cmd = [sys.executable, "-c", "from drifa_edge.cli import main; main()", "predict", str(checkpoint)]
    proc = subprocess.run(
        [*cmd, "--manifest", str(manifest), "--out", str(out), "-T", "3", "--threads", "1"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    text = proc.stdout + proc.stderr
    assert proc.returncode == 9, text[-3000:]
    assert "Traceback" not in text
    records = {r["case_id"]: r for r in read_jsonl(out)}
    assert sorted(records) == sorted(rows)  # nothing lost
    for case, (_, _, expect) in rows.items():
        r = records[case]
        if expect == "error":
            assert r["status"] == "error", case
        else:
            assert r["status"] == "ok", (case, r.get("error"))
            reasons = {t: v["referral"]["reason"] for t, v in r["tasks"].items()}
            assert (reasons["blood"] == "input_quality") == (expect == "quality"), (case, reasons)
            assert set(r["read"]) == set(TASKS)
    assert "multi-page TIFF (3 pages)" in records["pages"]["error"]
    assert "empty.npy: empty array" in records["closing[/red]tag"]["error"]
    for literal in (
        "pt[bold]7",
        "closing[/red]tag",
        "missing[2]",
        "scan[red]missing.png",
        "yes (input_quality)",
    ):
        assert literal in text, literal
    assert "9 ok, 3 failed, 3 referred for input quality" in text, text[-3000:]


def test_cli_output_path_errors_are_one_line_with_exit_10(checkpoint, tmp_path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    base = [sys.executable, "-c", "from drifa_edge.cli import main; main()"]
    d, b = write_good_case(tmp_path, "g", seed=0)
    commands = {
        "train": ["train", "--data", "synthetic", "--out", str(afile), "--epochs", "1"],
        "export": ["export", str(checkpoint), "--out", str(afile), "--onnx"],
        "bench": ["bench", str(checkpoint), "--out", str(afile)],
        "check": ["check", str(checkpoint), str(checkpoint), "--data", "synthetic", "--out", str(afile)],
        "predict-dir": [
            "predict",
            str(checkpoint),
            "-i",
            f"derm={d}",
            "-i",
            f"blood={b}",
            "--out",
            str(tmp_path),
        ],
        "predict-under-file": [
            "predict",
            str(checkpoint),
            "-i",
            f"derm={d}",
            "-i",
            f"blood={b}",
            "--out",
            str(afile / "p.jsonl"),
        ],
    }
    if Path("/dev/full").exists():  # every write fails with ENOSPC: a full disk
        commands["predict-disk-full"] = [
            *("predict", str(checkpoint), "-i", f"derm={d}", "-i", f"blood={b}", "--out", "/dev/full")
        ]
    for name, args in commands.items():
        proc = subprocess.run([*base, *args], env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 10, (name, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr and proc.stderr.count("\n") <= 2, (name, proc.stderr)
        path = {"predict-dir": str(tmp_path), "predict-disk-full": "/dev/full: no space left"}.get(
            name, str(afile)
        )
        assert path in proc.stderr.replace("\n", ""), (name, proc.stderr)
