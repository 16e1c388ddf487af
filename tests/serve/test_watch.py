"""The watch folder: DICOM files renamed in, a sub-folder per case, polling mode; temporary
and non-image names are left alone; a refused file goes to .rejected with its reason."""

from __future__ import annotations

import os

import pytest
from PIL import Image
from serve_helpers import make_study, serve_config, start_service, task_pixels, wait_for


def _service(tiny_model, tmp_path, polling):
    inbox = tmp_path / "inbox"
    cfg = serve_config(tmp_path / "root", watch={"folder": str(inbox), "polling": polling, "poll_interval_s": 0.3},
                       dicom={"enabled": False}, http={"enabled": False})  # fmt: skip
    return start_service(tiny_model, cfg), inbox


def _drop(ds, folder, name):
    """Write to a temporary name, then rename in (what a well-behaved writer does)."""
    tmp = folder / f".{name}.tmp"
    ds.save_as(tmp, enforce_file_format=True)
    os.replace(tmp, folder / name)


@pytest.mark.parametrize("polling", [False, True])
def test_dicom_files_and_a_case_folder(tiny_model, tmp_path, polling):
    svc, inbox = _service(tiny_model, tmp_path, polling)
    try:
        (inbox / "notes.txt").write_text("not an image")
        (inbox / "half.dcm.part").write_bytes(b"\0" * 10)
        for i, ds in enumerate(make_study(0)):
            _drop(ds, inbox, f"img{i}.dcm")
        case_dir = inbox / "case-A"
        case_dir.mkdir()
        for task in ("derm", "blood"):
            Image.fromarray(task_pixels(task, 3)).save(case_dir / f"{task}.png")
        wait_for(lambda: svc.store.counts()["DONE"] == 2, 30)
        assert {c.source for c in svc.store.cases()} == {"watch"}
        assert svc.store.result("case-A")["status"] == "ok"
        assert sorted(p.name for p in inbox.iterdir()) == ["half.dcm.part", "notes.txt"]  # taken ones removed
    finally:
        svc.stop()


def test_refused_file_goes_to_rejected(tiny_model, tmp_path):
    svc, inbox = _service(tiny_model, tmp_path, False)
    try:
        ds = make_study(0)[0]
        del ds.PixelData
        _drop(ds, inbox, "nopix.dcm")
        wait_for(lambda: (inbox / ".rejected" / "nopix.dcm.reason.txt").is_file(), 15)
        assert "missing_pixel_data" in (inbox / ".rejected" / "nopix.dcm.reason.txt").read_text()
        assert svc.store.cases() == []
    finally:
        svc.stop()


def test_files_present_at_start_up_are_taken(tiny_model, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for i, ds in enumerate(make_study(5)):
        _drop(ds, inbox, f"img{i}.dcm")
    svc, _ = _service(tiny_model, tmp_path, False)  # inotify mode: only the start-up scan sees them
    try:
        wait_for(lambda: svc.store.counts()["DONE"] == 1, 30)
        assert list(inbox.iterdir()) == []
    finally:
        svc.stop()
