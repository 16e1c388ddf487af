"""Bad input and odd deliveries: each ends in a documented state with an audit line, and the
service keeps running (a good study still gets its result afterwards)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from pydicom.uid import generate_uid
from serve_helpers import SCU_AE, make_instance, make_study, send, serve_config, start_service, wait_for

from drifa_edge.serve.audit import read_audit
from drifa_edge.serve.ingest import DOES_NOT_MATCH, SOP_CLASS_NOT_SUPPORTED, UID_CONFLICT


def _svc(tiny_model, tmp_path, **sections):
    return start_service(tiny_model, serve_config(tmp_path / "root", **sections))


@pytest.fixture
def service(tiny_model, tmp_path):
    svc = _svc(tiny_model, tmp_path)
    yield svc
    svc.stop()


def _audit(svc, event=None):
    lines = read_audit(svc.cfg.root / "audit.jsonl")
    return [e for e in lines if event is None or e["event"] == event]


def _still_works(svc, index=9):
    study = make_study(index)
    assert send(study, svc.dicom_port) == [0, 0]
    wait_for(lambda: any(svc.store.result(c.case_id) for c in svc.store.cases(("DONE",))), 30)


def _encoded(ds) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_wrong_sop_class_missing_pixels_and_truncated_are_refused(service):
    study = make_study(0)
    sr = make_study(1)[0]
    sr.SOPClassUID = sr.file_meta.MediaStorageSOPClassUID = (
        "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    )
    no_pixels = make_study(2)[0]
    del no_pixels.PixelData
    statuses = send([sr, no_pixels], service.dicom_port)
    assert statuses == [SOP_CLASS_NOT_SUPPORTED, DOES_NOT_MATCH]
    # a truncated file (half its pixel data missing) through the same path the receiver uses
    data = _encoded(study[0])
    outcome = service.ingestor.ingest(data[: len(data) - 3000], calling_ae=SCU_AE)
    assert not outcome.accepted and outcome.reason in ("undecodable_pixels", "unreadable")
    reasons = [e["reason"] for e in _audit(service, "rejected")]
    assert reasons[:2] == ["not_image", "missing_pixel_data"] and reasons[2] == outcome.reason
    assert service.store.cases() == []  # nothing of them was stored
    _still_works(service)


def test_calling_ae_not_allowed_is_rejected_and_audited(service):
    assert send(make_study(0), service.dicom_port, ae_title="INTRUDER") == [None, None]
    wait_for(lambda: _audit(service, "association_rejected"), 5)
    (line,) = _audit(service, "association_rejected")
    assert line["calling_ae"] == "INTRUDER" and line["reason"] == "calling_ae_not_allowed"
    assert service.store.cases() == []
    _still_works(service)


def test_same_uid_twice_duplicate_ignored_other_content_refused(service):
    study = make_study(0)
    assert send(study, service.dicom_port) == [0, 0]
    assert send(study[:1], service.dicom_port) == [0]  # a retry of the same instance: success, nothing new
    other = make_instance(np.zeros((64, 64, 3), np.uint8), study[0].StudyInstanceUID, study[0].SeriesInstanceUID,
                          study[0].SOPInstanceUID, "derm")  # fmt: skip
    assert send([other], service.dicom_port) == [UID_CONFLICT]
    assert len(_audit(service, "duplicate")) == 1
    assert [e["reason"] for e in _audit(service, "rejected")] == ["uid_conflict"]
    wait_for(lambda: service.store.counts()["DONE"] == 1, 30)
    (case,) = service.store.cases()
    assert len(service.store.instances_of(case.case_id)) == 2
    assert len(service.store.results(case.case_id)) == 1


def test_missing_task_fails_after_max_wait(tiny_model, tmp_path):
    svc = _svc(tiny_model, tmp_path, assembly={"quiet_seconds": 0.2, "max_wait_seconds": 1.0})
    try:
        send(make_study(0)[:1], svc.dicom_port)  # derm only
        wait_for(lambda: svc.store.counts()["FAILED"] == 1, 15)
        (case,) = svc.store.cases()
        assert case.reason == "missing_task"
        (line,) = _audit(svc, "failed")
        assert line["reason"] == "missing_task" and "blood" in line["detail"]
        assert svc.store.result(case.case_id) is None
    finally:
        svc.stop()


def test_late_instance_reruns_with_a_new_result_version(service):
    study = make_study(0)
    send(study, service.dicom_port)
    wait_for(lambda: service.store.counts()["DONE"] == 1, 30)
    late = make_instance(study[1].pixel_array[::-1].copy(), study[0].StudyInstanceUID, generate_uid(), generate_uid(),
                         "blood", series_number=5)  # fmt: skip
    assert send([late], service.dicom_port) == [0]
    (case,) = service.store.cases()
    wait_for(
        lambda: len(service.store.results(case.case_id)) == 2 and service.store.counts()["DONE"] == 1, 30
    )
    v1, v2 = service.store.results(case.case_id)
    assert (v1["result_version"], v2["result_version"]) == (1, 2)
    assert v2["dicom"]["sop_instance_uids"]["blood"] == late.SOPInstanceUID  # multi_series = latest
    assert v1["dicom"]["sop_instance_uids"]["blood"] == study[1].SOPInstanceUID  # v1 kept, not overwritten
    assert (service.cfg.root / "results" / case.case_id / "v1.json").is_file()
    assert [e["event"] for e in _audit(service) if e.get("sop_instance_uid") == late.SOPInstanceUID] == [
        "late"
    ]


def test_size_limit_and_disk_floor(tiny_model, tmp_path):
    svc = _svc(tiny_model, tmp_path, dicom={"max_instance_mb": 0.001})
    try:
        assert send(make_study(0)[:1], svc.dicom_port) == [0xA700]
        assert [e["reason"] for e in _audit(svc, "rejected")] == ["size_limit"]
    finally:
        svc.stop()
    svc = _svc(tiny_model, tmp_path / "b", storage={"disk_floor_mb": 1e12})
    try:
        assert send(make_study(0)[:1], svc.dicom_port) == [0xA700]
        assert [e["reason"] for e in _audit(svc, "rejected")] == ["disk_floor"]
        assert svc.readiness()["disk_above_floor"] is False
    finally:
        svc.stop()


def test_late_instance_ignored_when_configured_and_unrouted_series(tiny_model, tmp_path):
    svc = _svc(tiny_model, tmp_path, assembly={"late_instance": "ignore"})
    try:
        study = make_study(0)
        localizer = make_instance(
            study[1].pixel_array, study[0].StudyInstanceUID, generate_uid(), generate_uid(), "localizer"
        )
        assert send([*study, localizer], svc.dicom_port) == [0, 0, 0]
        wait_for(lambda: svc.store.counts()["DONE"] == 1, 30)
        late = make_instance(
            study[1].pixel_array[::-1].copy(),
            study[0].StudyInstanceUID,
            generate_uid(),
            generate_uid(),
            "blood",
        )
        assert send([late], svc.dicom_port) == [0]  # acknowledged and kept, but no new version
        (case,) = svc.store.cases()
        assert svc.store.get_case(case.case_id).state == "DONE" and len(svc.store.results(case.case_id)) == 1
        assert len(svc.store.instances_of(case.case_id)) == 4
        events = {
            e.get("sop_instance_uid"): e for e in _audit(svc) if e["event"] in ("received", "late_ignored")
        }
        assert events[localizer.SOPInstanceUID]["task"] == "unrouted"
        assert events[late.SOPInstanceUID]["event"] == "late_ignored"
    finally:
        svc.stop()
