"""Compressed transfer syntaxes on the receiver: studies compressed by real encoders (dcmtk's
``dcmcjpeg``, ``dcmcjpls``, ``dcmcrle``; OpenJPEG through Pillow for JPEG 2000) and sent with
dcmtk's ``storescu`` proposing that syntax are stored as sent (compressed), decoded, and
inferred. Lossless syntaxes decode to the very pixels that were compressed, so their
results equal ``predict``'s on the uncompressed files (same case id, so same MC masks);
lossy JPEG baseline stays close."""

from __future__ import annotations

import io
import shutil
import subprocess

import numpy as np
import pydicom
import pytest
from serve_helpers import dcmtk_storescu, make_study, serve_config, start_service, wait_for, write_files

from drifa_edge.inference.engine import EngineConfig
from drifa_edge.inference.manifest import Case
from drifa_edge.inference.predict import predict_cases
from drifa_edge.runtimes.base import RuntimeOptions
from drifa_edge.serve.receiver import accepted_transfer_syntaxes

# name: (encoder command or "pillow-j2k", storescu proposal flag, transfer syntax UID, lossless)
CODECS = {
    "jpeg-lossless-sv1": (["dcmcjpeg", "+e1"], "-xs", "1.2.840.10008.1.2.4.70", True),
    "jpeg-ls-lossless": (["dcmcjpls", "+el"], "-xt", "1.2.840.10008.1.2.4.80", True),
    "rle": (["dcmcrle"], "-xr", "1.2.840.10008.1.2.5", True),
    "jpeg2000-lossless": ("pillow-j2k", "-xv", "1.2.840.10008.1.2.4.90", True),
    "jpeg-baseline": (["dcmcjpeg", "+eb"], "-xy", "1.2.840.10008.1.2.4.50", False),
}


def _j2k(src, dst) -> None:
    """JPEG 2000 lossless (reversible 5/3 wavelet, no colour transform) by OpenJPEG via Pillow,
    encapsulated into the DICOM file (PS3.5 A.4)."""
    from PIL import Image, features
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless

    if not features.check("jpg_2000"):
        pytest.skip("Pillow was built without OpenJPEG; needed to encode JPEG 2000")
    ds = pydicom.dcmread(src)
    buf = io.BytesIO()
    Image.fromarray(ds.pixel_array).save(buf, format="JPEG2000", irreversible=False, no_jp2=True)
    ds.PixelData = encapsulate([buf.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.save_as(dst, enforce_file_format=True)


def _compress(name, src, dst) -> None:
    encoder = CODECS[name][0]
    if encoder == "pillow-j2k":
        return _j2k(src, dst)
    if shutil.which(encoder[0]) is None:
        pytest.skip(f"dcmtk's {encoder[0]} is not installed (apt-get install dcmtk)")
    run = subprocess.run([*encoder, str(src), str(dst)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr


def test_receiver_proposes_every_decodable_compressed_syntax():
    from pydicom.pixels import get_decoder

    syntaxes = accepted_transfer_syntaxes()
    for _, _, uid, _ in CODECS.values():
        assert (uid in syntaxes) == get_decoder(uid).is_available, uid
    assert "1.2.840.10008.1.2.1" in syntaxes  # explicit VR little endian stays


def test_compressed_studies_stored_decoded_and_inferred(tiny_model, tmp_path):
    storescu = dcmtk_storescu()
    missing = [uid for _, _, uid, _ in CODECS.values() if uid not in accepted_transfer_syntaxes()]
    if missing:
        pytest.skip(f"no pydicom decoder for {missing}: pip install 'drifa-edge[serve]' (python-gdcm)")
    svc = start_service(tiny_model, serve_config(tmp_path / "root"))
    try:
        plain = make_study(0)  # the reference: the same pixels, uncompressed
        sent = {"plain": write_files(plain, tmp_path / "plain")}
        for name in CODECS:
            study = make_study(0, patient_id=f"PAT-{name}")  # same pixels, new UIDs
            for ds in study:
                ds.PatientID = f"PAT-{name}"
            files = write_files(study, tmp_path / f"{name}-raw")
            out = tmp_path / name
            out.mkdir()
            sent[name] = []
            for f in files:
                _compress(name, f, out / f.name)
                assert str(pydicom.dcmread(out / f.name).file_meta.TransferSyntaxUID) == CODECS[name][2]
                sent[name].append(out / f.name)
        for name, files in sent.items():
            flag = [] if name == "plain" else [CODECS[name][1]]
            run = subprocess.run([storescu, *flag, "-aet", "STORESCU", "-aec", "DRIFA_EDGE", "127.0.0.1",
                                  str(svc.dicom_port), *map(str, files)], capture_output=True, text=True, timeout=60)  # fmt: skip
            assert run.returncode == 0, f"{name}: {run.stdout}{run.stderr}"
        wait_for(lambda: svc.store.counts()["DONE"] == len(sent), 120)
        by_patient = {}
        for case in svc.store.cases():
            record = svc.store.result(case.case_id)
            assert record["status"] == "ok", record["error"]
            patient = pydicom.dcmread(next(iter(svc.store.instances_of(case.case_id))).path).PatientID
            by_patient[patient] = (case, record)
        for name, (_, uid, lossless) in ((n, c[1:]) for n, c in CODECS.items()):
            case, record = by_patient[f"PAT-{name}"]
            for inst in svc.store.instances_of(case.case_id):
                stored = pydicom.dcmread(inst.path)
                assert str(stored.file_meta.TransferSyntaxUID) == uid, f"{name}: stored as sent"
                task = stored.SeriesDescription
                original = next(ds for ds in plain if ds.SeriesDescription == task).pixel_array
                decoded = stored.pixel_array
                if lossless:
                    np.testing.assert_array_equal(decoded, original, err_msg=f"{name} {task}")
                else:  # lossy JPEG (YBR 4:2:2 for RGB): close, not equal. dcmcjpeg's lossy path
                    # shifts a gray image's range to start at 0 (no rescale written); the reader
                    # min-max scales gray without a VOI, so compare min-max scaled pixels
                    a, b = (x.astype(float) for x in (original, decoded))
                    if a.ndim == 2:
                        a, b = (255 * (x - x.min()) / (x.max() - x.min()) for x in (a, b))
                    diff = np.abs(a - b).mean()
                    assert 0 < diff < 8, f"{name} {task}: mean abs error {diff} (of 255)"
            # predict on the uncompressed files, with this case's id (its MC mask seed)
            got = []
            plain_files = {ds.SeriesDescription: f for ds, f in zip(plain, sent["plain"], strict=True)}
            predict_cases(tiny_model, [Case(case.case_id, plain_files)], None, runtime="torch",
                          options=RuntimeOptions(threads=1), engine_cfg=EngineConfig(samples=4, seed=0),
                          on_record=got.append)  # fmt: skip
            for task, r in record["tasks"].items():
                ref = got[0]["tasks"][task]["probabilities"]
                # records round probabilities to 6 decimals: two roundings of values a float
                # summation order apart can differ by one unit (1e-6) plus float error
                assert r["probabilities"] == pytest.approx(ref, abs=2e-6 if lossless else 0.2), (
                    f"{name} {task}"
                )
    finally:
        svc.stop()
