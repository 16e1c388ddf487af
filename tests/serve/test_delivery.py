"""Results reach a real Orthanc and a recording receiver: DICOM in -> SR out, exactly one
delivery per result; an Orthanc outage queues results that are delivered once it is back."""

from __future__ import annotations

import pydicom
from serve_helpers import SCU_AE, TEST_SCU_AE, make_study, send, serve_config, start_service, wait_for

from drifa_edge.serve.audit import read_audit
from drifa_edge.serve.results import result_uids


def _service(tiny_model, tmp_path, orthanc, recorder):
    dests = [
        {"name": "orthanc", "ae_title": orthanc.ae_title, "host": "127.0.0.1", "port": orthanc.dicom_port},
        {"name": "recorder", "ae_title": recorder.ae_title, "host": "127.0.0.1", "port": recorder.port},
    ]
    config = serve_config(
        tmp_path / "root",
        dicom={"ae_title": TEST_SCU_AE},  # the AE Orthanc's test config accepts stores from
        destinations=dests,
        outbox={"first_delay_s": 0.5, "max_delay_s": 1.0},
    )
    return start_service(tiny_model, config)


def _sr_uid(svc, case):
    return result_uids(case.study_uid, case.case_id, case.version).sr_instance


def test_sr_delivered_once_to_orthanc_and_recorder(tiny_model, tmp_path, orthanc, recorder):
    svc = _service(tiny_model, tmp_path, orthanc, recorder)
    try:
        studies = [make_study(i) for i in range(2)]
        for study in studies:
            assert send(study, svc.dicom_port, SCU_AE, TEST_SCU_AE) == [0, 0]
        wait_for(lambda: svc.store.counts()["SENT"] == 2, 60)
        for case in svc.store.cases():
            uid = _sr_uid(svc, case)
            assert recorder.deliveries[uid] == 1
            sr = pydicom.dcmread(__import__("io").BytesIO(orthanc.instance_file(uid)))
            assert sr.StudyInstanceUID == case.study_uid
            assert sr.StudyInstanceUID in {s[0].StudyInstanceUID for s in studies}
        assert recorder.total() == 2
        events = [e["event"] for e in read_audit(svc.cfg.root / "audit.jsonl")]
        assert events.count("sent") == 4 and events.count("case_sent") == 2
    finally:
        svc.stop()


def test_orthanc_outage_results_queue_then_deliver(tiny_model, tmp_path, orthanc, recorder):
    svc = _service(tiny_model, tmp_path, orthanc, recorder)
    try:
        orthanc.stop()
        send(make_study(0), svc.dicom_port, SCU_AE, TEST_SCU_AE)
        wait_for(
            lambda: any(e["event"] == "send_failed" for e in read_audit(svc.cfg.root / "audit.jsonl")), 60
        )
        (case,) = svc.store.cases()
        assert svc.store.get_case(case.case_id).state == "DONE"  # waiting for Orthanc
        orthanc.start()
        wait_for(lambda: svc.store.get_case(case.case_id).state == "SENT", 60)
        uid = _sr_uid(svc, svc.store.get_case(case.case_id))
        assert orthanc.instance_file(uid) is not None
        assert recorder.deliveries[uid] == 1
    finally:
        svc.stop()
