"""Cases posted over HTTP or dropped as a sub-folder in the watch folder get the same results
as C-STORE cases: the JSON record always, and an SR in the source study (delivered once to a
recording receiver) when every input is a DICOM image of one study; other inputs get no SR
and the API response says why."""

from __future__ import annotations

import io

import httpx
import pydicom
import pytest
from serve_helpers import make_study, serve_config, start_service, wait_for

hd = pytest.importorskip("highdicom", reason="highdicom not installed: pip install 'drifa-edge[serve]'")

from drifa_edge.serve.http import NO_SR_STUDIES  # noqa: E402
from drifa_edge.serve.results import result_uids  # noqa: E402


def _bytes(ds) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _evidence(sr) -> set[str]:
    return {
        str(inst.ReferencedSOPInstanceUID)
        for study in sr.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for inst in series.ReferencedSOPSequence
    }


def _check_sr(root, case_id, study, record):
    sr_path = root / "results" / case_id / "sr-v1.dcm"
    wait_for(sr_path.is_file, 30)
    sr = hd.sr.srread(sr_path)
    assert sr.StudyInstanceUID == study[0].StudyInstanceUID
    assert sr.SOPInstanceUID == result_uids(study[0].StudyInstanceUID, case_id, 1).sr_instance
    assert _evidence(sr) == {ds.SOPInstanceUID for ds in study}
    assert record["dicom"]["sop_instance_uids"] == {ds.SeriesDescription: ds.SOPInstanceUID for ds in study}
    return sr


def test_http_dicom_case_gets_an_sr_delivered_once(tiny_model, tmp_path, recorder):
    dest = {"name": "recorder", "ae_title": recorder.ae_title, "host": "127.0.0.1", "port": recorder.port}
    svc = start_service(tiny_model, serve_config(tmp_path / "root", destinations=[dest],
                                                 outbox={"first_delay_s": 0.5, "max_delay_s": 1.0}))  # fmt: skip
    try:
        study = make_study(0)
        with httpx.Client(base_url=f"http://127.0.0.1:{svc.http_port}", timeout=60) as http:
            files = {ds.SeriesDescription: (f"{ds.SeriesDescription}.bin", _bytes(ds)) for ds in study}
            r = http.post("/v1/cases", files=files, data={"case_id": "up-1"})
            assert r.status_code == 200, r.text
            record = r.json()
            sr = record.pop("sr")
            assert sr["expected"] is True and sr["study_instance_uid"] == study[0].StudyInstanceUID
            assert record["dicom"]["study_instance_uid"] == study[0].StudyInstanceUID
            _check_sr(svc.cfg.root, "up-1", study, record)
            wait_for(lambda: svc.store.get_case("up-1").state == "SENT", 60)
            assert recorder.deliveries == {sr["sop_instance_uid"]: 1}
            assert http.get("/v1/cases/up-1").json()["sr"] == {**sr, "written": True}
            # DICOM files of two studies: the record, no SR, and the reason
            other = make_study(1)
            files = {"derm": ("d.dcm", _bytes(study[0])), "blood": ("b.dcm", _bytes(other[1]))}
            r = http.post("/v1/cases", files=files, data={"case_id": "up-2"})
            assert r.status_code == 200, r.text
            assert r.json()["dicom"] is None and r.json()["sr"] == {
                "expected": False,
                "reason": NO_SR_STUDIES,
            }
    finally:
        svc.stop()
    assert not (tmp_path / "root" / "results" / "up-2" / "sr-v1.dcm").exists()


def test_watch_subfolder_of_dicom_files_gets_an_sr(tiny_model, tmp_path):
    inbox = tmp_path / "inbox"
    cfg = serve_config(tmp_path / "root", watch={"folder": str(inbox), "polling": True, "poll_interval_s": 0.3},
                       dicom={"enabled": False}, http={"enabled": False})  # fmt: skip
    svc = start_service(tiny_model, cfg)
    try:
        study = make_study(2)
        staging = tmp_path / "staging" / "case-W"
        staging.mkdir(parents=True)
        for ds in study:  # one file per task, named after the task
            ds.save_as(staging / f"{ds.SeriesDescription}.dcm", enforce_file_format=True)
        staging.rename(inbox / "case-W")  # the whole folder appears at once
        wait_for(lambda: svc.store.counts()["DONE"] == 1, 30)
        record = svc.store.result("case-W")
        assert record["status"] == "ok" and record["source"] == "watch"
        sr = _check_sr(svc.cfg.root, "case-W", study, record)
        assert pydicom.dcmread(svc.cfg.root / "results" / "case-W" / "sr-v1.dcm").Modality == "SR"
        assert sr.PatientID == study[0].PatientID
    finally:
        svc.stop()
