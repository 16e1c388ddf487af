"""Crash points (``DRIFA_EDGE_CRASH_AT``): the real ``drifa-edge serve`` subprocess exits at
a named point, is restarted, and the sender re-sends what was not acknowledged (as a
modality does). Every acknowledged instance survives, the study gets exactly one
result version, and its SR is delivered exactly once to a recording receiver that answers
C-FIND (the sender looks an in-doubt result up before sending it again). Two points run
by default; the others are marked slow (each restart loads the model again, ~5 s here)."""

from __future__ import annotations

import pytest
from serve_helpers import ServeProcess, make_study, send, serve_config, wait_for

from drifa_edge.serve.audit import read_audit
from drifa_edge.serve.crash import EXIT_CODE
from drifa_edge.serve.results import result_uids
from drifa_edge.serve.store import Store

FAST = ("after_store_commit", "after_send")
SLOW = (
    "after_instance_fsync",
    "before_ack",
    "after_ack",
    "during_inference",
    "after_result_commit",
    "before_send",
)


def _run_crash(tiny_model, tmp_path, point, recorder):
    dest = {"name": "recorder", "ae_title": recorder.ae_title, "host": "127.0.0.1", "port": recorder.port}
    config = serve_config(
        tmp_path / "root", destinations=[dest], outbox={"first_delay_s": 0.5, "max_delay_s": 1.0}
    )
    study = make_study(0)
    svc = ServeProcess(tiny_model, config, crash_at=point)
    try:
        statuses = send(study, svc.dicom_port, timeout=2.0)  # the peer dies: do not wait long
        assert svc.wait_exit(60) == EXIT_CODE
    finally:
        svc.stop()
    acknowledged = {ds.SOPInstanceUID for ds, s in zip(study, statuses, strict=True) if s == 0}
    store = Store(tmp_path / "root" / "store.sqlite")
    try:
        for uid in acknowledged:  # nothing acknowledged is lost, before any restart
            assert store.find_instance(uid) is not None, f"{point}: acknowledged {uid} lost"
    finally:
        store.close()
    svc = ServeProcess(tiny_model, config)
    try:
        resend = [ds for ds, s in zip(study, statuses, strict=True) if s != 0]
        if resend:
            assert send(resend, svc.dicom_port) == [0] * len(resend)
        store = Store(tmp_path / "root" / "store.sqlite")
        try:
            wait_for(lambda: store.counts()["SENT"] == 1, 60)
            (case,) = store.cases()
            results = store.results(case.case_id)
            assert [r["result_version"] for r in results] == [1], f"{point}: {len(results)} results"
            assert {i.sop_uid for i in store.instances_of(case.case_id)} == {
                ds.SOPInstanceUID for ds in study
            }
            # the SR of the one version is written too (also for a case inferred right at restart)
            sr = tmp_path / "root" / "results" / case.case_id / "sr-v1.dcm"
            assert sr.is_file()
            sr_uid = result_uids(case.study_uid, case.case_id, 1).sr_instance
            assert recorder.deliveries == {sr_uid: 1}, f"{point}: deliveries {dict(recorder.deliveries)}"
        finally:
            store.close()
    finally:
        svc.kill()
    events = list(read_audit(tmp_path / "root" / "audit.jsonl"))
    assert [e["event"] for e in events].count("inferred") == 1
    return statuses, events


@pytest.mark.parametrize("point", FAST)
def test_crash_point_restart(tiny_model, tmp_path, point, recorder):
    statuses, events = _run_crash(tiny_model, tmp_path, point, recorder)
    if point == "after_store_commit":
        assert statuses[0] is None  # the first instance was stored but never acknowledged
    if point == "after_send":  # delivered before the crash, found by C-FIND after it, not resent
        assert statuses == [0, 0]
        sent = [e for e in events if e["event"] == "sent"]
        assert [e.get("verify") for e in sent] == ["present"], sent


@pytest.mark.slow
@pytest.mark.parametrize("point", SLOW)
def test_crash_point_restart_slow(tiny_model, tmp_path, point, recorder):
    statuses, events = _run_crash(tiny_model, tmp_path, point, recorder)
    names = [e["event"] for e in events]
    if point == "after_instance_fsync":
        assert statuses[0] is None and "recovered_instance" in names
    if point == "after_ack":
        assert statuses[0] == 0
    if point == "during_inference":
        assert statuses == [0, 0] and "recovered" in names
    if point == "before_send":  # in doubt, looked up, absent, sent once
        assert [e.get("verify") for e in events if e["event"] == "sent"] == ["absent"]
