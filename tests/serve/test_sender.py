"""Sending results with real peers: Orthanc (the destination PACS, asserted through its
REST API) and a recording pynetdicom receiver (counts every delivery, duplicates too).
Time is injected into the outbox; no test sleeps for a backoff."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

hd = pytest.importorskip("highdicom", reason="highdicom not installed: pip install 'drifa-edge[serve]'")
pytest.importorskip("pynetdicom", reason="pynetdicom not installed: pip install 'drifa-edge[serve]'")

from drifa_edge.serve import results  # noqa: E402
from drifa_edge.serve.outbox import DEAD, PENDING, SENT, BackoffPolicy, Outbox  # noqa: E402
from drifa_edge.serve.sender import Destination, DicomTls, Sender, SenderConfig  # noqa: E402
from tests.serve.conftest import TEST_SCU_AE, RecordingReceiver, free_port  # noqa: E402
from tests.serve.test_results import check_sr_matches  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
T0 = 1_700_000_000.0
FAST = {
    "connection_timeout_s": 3.0,
    "acse_timeout_s": 5.0,
    "dimse_timeout_s": 10.0,
    "network_timeout_s": 10.0,
}


def to_orthanc(orthanc) -> Destination:
    return Destination("orthanc", orthanc.ae_title, "127.0.0.1", orthanc.dicom_port)


def to_recorder(recorder) -> Destination:
    return Destination("recorder", recorder.ae_title, "127.0.0.1", recorder.port)


def sender_for(outbox, *destinations, calling=TEST_SCU_AE) -> Sender:
    return Sender(outbox, SenderConfig(tuple(destinations), calling_ae_title=calling, **FAST))


@pytest.fixture
def written(result_case, tmp_path):
    return results.write_results(
        tmp_path / "results", result_case.record, result_case.sources, result_case.card
    )


def test_sr_reaches_orthanc_and_equals_record(orthanc, recorder, result_case, written, tmp_path):
    outbox = Outbox(tmp_path / "serve.db")
    for path in written.paths:
        outbox.enqueue("case-001", 1, path, ["orthanc", "recorder"], now=T0)
    seen = []
    sender = Sender(
        outbox,
        SenderConfig((to_orthanc(orthanc), to_recorder(recorder)), calling_ae_title=TEST_SCU_AE, **FAST),
        on_attempt=seen.append,
    )
    report = sender.run_once(now=T0)
    assert (report.sent, report.failed) == (4, 0), [a.reason for a in report.attempts]
    assert [a.outcome for a in seen] == ["sent"] * 4
    assert outbox.case_state("case-001", 1) == SENT
    # through Orthanc's REST API: the stored file parses as an SR whose values are the record's
    stored = orthanc.instance_file(written.uids.sr_instance)
    assert stored is not None, orthanc.log_tail()
    check_sr_matches(hd.sr.srread(io.BytesIO(stored)), result_case)
    tags = orthanc.instance_tags(written.uids.sr_instance)  # Orthanc's parser read it too
    assert tags["SOPClassUID"] == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert tags["StudyInstanceUID"] == result_case.study_uid
    assert tags["SeriesInstanceUID"] == written.uids.sr_series
    assert tags["CompletionFlag"] == "COMPLETE" and tags["VerificationFlag"] == "UNVERIFIED"
    assert len(tags["ContentSequence"]) >= 4  # language, observer, procedure, measurements...
    assert orthanc.instance_tags(written.uids.sc_instance)["BurnedInAnnotation"] == "YES"
    study = orthanc.post_json("/tools/lookup", result_case.study_uid)
    assert [h["Type"] for h in study] == ["Study"]
    assert recorder.deliveries == {written.uids.sr_instance: 1, written.uids.sc_instance: 1}
    assert sender.run_once(now=T0 + 3600).attempts == []  # nothing left to send


def test_outage_backs_off_then_delivers_exactly_once(orthanc, recorder, written, tmp_path):
    policy = BackoffPolicy(base_s=60, max_s=3600)
    outbox = Outbox(tmp_path / "serve.db", policy)
    outbox.enqueue("case-001", 1, written.sr_path, ["orthanc", "recorder"], now=T0)
    sender = sender_for(outbox, to_orthanc(orthanc), to_recorder(recorder))
    orthanc.stop()
    recorder.stop()
    first = sender.run_once(now=T0)
    assert first.failed == 2 and all("Connection refused" in a.reason for a in first.attempts)
    assert {a.item.next_attempt_at for a in first.attempts} == {T0 + 60}
    second = sender.run_once(now=T0 + 61)
    assert second.failed == 2 and {a.item.next_attempt_at for a in second.attempts} == {T0 + 61 + 120}
    assert sender.run_once(now=T0 + 61 + 119).attempts == []  # backing off: not tried early
    assert recorder.total() == 0
    orthanc.start()
    recorder.start()
    third = sender.run_once(now=T0 + 61 + 120)
    assert third.sent == 2, [a.reason for a in third.attempts]
    assert sender.run_once(now=T0 + 10 * 3600).attempts == []
    assert recorder.deliveries == {written.uids.sr_instance: 1}
    assert orthanc.instance_file(written.uids.sr_instance) is not None
    assert [r.attempts for r in outbox.list()] == [3, 3]


def test_dead_after_give_up_then_retry_delivers(recorder, written, tmp_path):
    outbox = Outbox(tmp_path / "serve.db", BackoffPolicy(base_s=60, max_s=60, give_up_after_s=100))
    (item_id,) = outbox.enqueue("case-001", 1, written.sr_path, ["recorder"], now=T0)
    down = Destination("recorder", recorder.ae_title, "127.0.0.1", free_port())  # nobody listens
    sender = sender_for(outbox, down)
    outcomes = [sender.run_once(now=T0 + k * 60).attempts[0].outcome for k in range(3)]
    assert outcomes == ["failed", "failed", "dead"]
    assert outbox.get(item_id).state == DEAD and outbox.due(T0 + 10**6) == []
    assert sender.run_once(now=T0 + 10**6).attempts == [] and recorder.total() == 0
    assert outbox.retry(now=T0 + 10**6) == 1
    report = sender_for(outbox, to_recorder(recorder)).run_once(now=T0 + 10**6)
    assert report.sent == 1
    assert outbox.get(item_id).state == SENT and recorder.deliveries == {written.uids.sr_instance: 1}


def test_failure_status_recorded_with_reason(recorder, written, tmp_path):
    recorder.status = 0xA700  # Out of resources
    outbox = Outbox(tmp_path / "serve.db")
    (item_id,) = outbox.enqueue("case-001", 1, written.sr_path, ["recorder"], now=T0)
    attempt = sender_for(outbox, to_recorder(recorder)).run_once(now=T0).attempts[0]
    item = outbox.get(item_id)
    assert (attempt.outcome, item.state, item.last_status) == ("failed", PENDING, 0xA700)
    assert "0xA700" in item.last_error and "recorder" in item.last_error
    assert recorder.total() == 0


def test_unknown_calling_ae_refused_by_orthanc(orthanc, written, tmp_path):
    """Orthanc allows only the test SCU: another calling AE gets no stored instance and a reason."""
    outbox = Outbox(tmp_path / "serve.db")
    (item_id,) = outbox.enqueue("case-001", 1, written.sr_path, ["orthanc"], now=T0)
    attempt = sender_for(outbox, to_orthanc(orthanc), calling="STRANGER").run_once(now=T0).attempts[0]
    assert attempt.outcome == "failed" and "orthanc" in attempt.reason and "abort" in attempt.reason
    assert outbox.get(item_id).state == PENDING
    assert orthanc.instance_count() == 0


def test_missing_file_is_dead_at_once(recorder, written, tmp_path):
    outbox = Outbox(tmp_path / "serve.db")
    (item_id,) = outbox.enqueue("case-001", 1, written.sr_path, ["recorder"], now=T0)
    written.sr_path.unlink()
    attempt = sender_for(outbox, to_recorder(recorder)).run_once(now=T0).attempts[0]
    assert attempt.outcome == "dead" and "is gone" in outbox.get(item_id).last_error


_CRASHING_SENDER = textwrap.dedent(
    """
    import sys
    from drifa_edge.serve.outbox import Outbox
    from drifa_edge.serve.sender import Destination, Sender, SenderConfig
    db, port, now = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    dest = Destination("recorder", "RECORDER", "127.0.0.1", port)
    Sender(Outbox(db), SenderConfig((dest,), calling_ae_title="DRIFA_TEST")).run_once(now=now)
    print("finished without crashing")
    """
)


@pytest.mark.parametrize("answers_find", [True, False], ids=["c-find", "no-c-find"])
@pytest.mark.parametrize(("point", "delivered_before_restart"), [("before_send", 0), ("after_send", 1)])
def test_kill_around_send_exactly_once_when_destination_answers_c_find(
    point, delivered_before_restart, answers_find, written, tmp_path
):
    """os._exit just before / just after the acknowledged C-STORE (before mark_sent): on
    restart everything is delivered. The killed row is in doubt; a destination that answers
    C-FIND is asked first: exactly one delivery per result. One that cannot be asked gets
    the same SOP Instance UID once more (at least once)."""
    recorder = RecordingReceiver(answers_find=answers_find)
    recorder.start()
    try:
        db = tmp_path / "serve.db"
        outbox = Outbox(db)
        for path in written.paths:
            outbox.enqueue("case-001", 1, path, ["recorder"], now=T0)
        env = dict(
            os.environ,
            DRIFA_EDGE_CRASH_AT=point,
            PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        )
        proc = subprocess.run(
            [sys.executable, "-c", _CRASHING_SENDER, str(db), str(recorder.port), str(T0)],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 137, proc.stdout + proc.stderr
        assert f"crash point '{point}'" in proc.stderr
        assert recorder.total() == delivered_before_restart
        rows = outbox.list()
        assert [r.state for r in rows] == [PENDING, PENDING]  # nothing marked, nothing lost
        assert [r.in_doubt_since is not None for r in rows] == [True, False]  # the one in flight
        report = sender_for(outbox, to_recorder(recorder)).run_once(now=T0 + 1)  # the restarted service
        assert report.sent == 2
        assert [r.state for r in outbox.list()] == [SENT, SENT]
        assert [r.in_doubt_since for r in outbox.list()] == [None, None]
        uids = {written.uids.sr_instance, written.uids.sc_instance}
        assert set(recorder.deliveries) == uids  # every result delivered
        first = report.attempts[0]
        if answers_find:
            assert recorder.deliveries == dict.fromkeys(uids, 1)  # exactly once
            assert first.verify == ("present" if delivered_before_restart else "absent")
            assert recorder.finds == 1  # only the in-doubt row was looked up
        else:
            extra = sum(recorder.deliveries.values()) - len(uids)
            assert extra == delivered_before_restart  # the one acknowledged before the kill
            assert first.verify.startswith("unavailable: ") and "C-FIND context" in first.verify
    finally:
        recorder.stop()


def test_verify_none_resends_without_asking(recorder, written, tmp_path):
    """``verify = "none"``: an in-doubt row that the destination has is sent again (same UID)."""
    outbox = Outbox(tmp_path / "serve.db")
    (item_id,) = outbox.enqueue("case-001", 1, written.sr_path, ["recorder"], now=T0)
    assert sender_for(outbox, to_recorder(recorder)).run_once(now=T0).sent == 1
    outbox.retry()  # no-op on a SENT row; put it back in doubt by hand, as a lost mark_sent would
    outbox._db.execute("UPDATE outbox SET state='PENDING', in_doubt_since=? WHERE id=?", (T0, item_id))
    dest = Destination("recorder", recorder.ae_title, "127.0.0.1", recorder.port, verify="none")
    attempt = sender_for(outbox, dest).run_once(now=T0 + 1).attempts[0]
    assert attempt.outcome == "sent" and attempt.verify == "unavailable: verify = 'none' for recorder"
    assert recorder.deliveries == {written.uids.sr_instance: 2} and recorder.finds == 0


def test_in_doubt_lookup_at_orthanc(orthanc, written, tmp_path):
    """Orthanc answers the C-FIND: an in-doubt row it has is marked sent without a C-STORE;
    one it lacks is sent."""
    outbox = Outbox(tmp_path / "serve.db")
    sr_id, sc_id = (outbox.enqueue("case-001", 1, p, ["orthanc"], now=T0)[0] for p in written.paths)
    first = sender_for(Outbox(tmp_path / "other.db"), to_orthanc(orthanc))
    first.outbox.enqueue("case-001", 1, written.sr_path, ["orthanc"], now=T0)
    assert first.run_once(now=T0).sent == 1  # Orthanc has the SR, not the summary
    changes = len(orthanc.get_json("/changes?limit=1000")["Changes"])
    for item_id in (sr_id, sc_id):  # both in doubt, as after a crash mid-send
        outbox.mark_in_doubt(item_id, now=T0)
    report = sender_for(outbox, to_orthanc(orthanc)).run_once(now=T0 + 1)
    verify = {a.item.id: a.verify for a in report.attempts}
    assert verify == {sr_id: "present", sc_id: "absent"}, [a.reason for a in report.attempts]
    assert [outbox.get(i).state for i in (sr_id, sc_id)] == [SENT, SENT]
    assert orthanc.instance_count() == 2
    new = orthanc.get_json("/changes?limit=1000")["Changes"][changes:]
    stored = [c for c in new if c["ChangeType"] == "NewInstance"]
    assert len(stored) == 1  # only the summary was stored now


@pytest.fixture
def tls_files(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not installed; needed to make a test certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def test_dicom_tls_delivery_and_untrusted_peer(tls_files, written, tmp_path):
    import ssl

    cert, key = tls_files
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(str(cert), str(key))
    receiver = RecordingReceiver(ssl_context=server_ctx)
    receiver.start()
    try:
        outbox = Outbox(tmp_path / "serve.db")
        (item_id,) = outbox.enqueue("case-001", 1, written.sr_path, ["secure"], now=T0)
        # a client that trusts another CA refuses the server: recorded, nothing delivered
        other_ca = tmp_path / "other-ca.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=other",
             "-keyout", str(tmp_path / "other-key.pem"), "-out", str(other_ca)],
            check=True, capture_output=True,
        )  # fmt: skip
        untrusted = Destination("secure", "RECORDER", "127.0.0.1", receiver.port, tls=DicomTls(other_ca))
        attempt = sender_for(outbox, untrusted).run_once(now=T0).attempts[0]
        assert attempt.outcome == "failed" and receiver.total() == 0
        assert "certificate verify failed" in attempt.reason.lower(), attempt.reason
        trusted = Destination("secure", "RECORDER", "127.0.0.1", receiver.port, tls=DicomTls(cert))
        report = sender_for(outbox, trusted).run_once(now=T0 + 10**6)
        assert report.sent == 1, [a.reason for a in report.attempts]
        assert receiver.deliveries == {written.uids.sr_instance: 1} and outbox.get(item_id).state == SENT
    finally:
        receiver.stop()


def test_run_forever_thread_delivers_and_stops(recorder, written, tmp_path):
    import threading

    outbox = Outbox(tmp_path / "serve.db")
    stop = threading.Event()
    thread = threading.Thread(target=sender_for(outbox, to_recorder(recorder)).run_forever, args=(stop, 0.05))
    thread.start()
    try:
        outbox.enqueue("case-001", 1, written.sr_path, ["recorder"])  # while the thread runs
        for _ in range(200):
            if outbox.case_state("case-001", 1) == SENT:
                break
            stop.wait(0.05)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()
    assert outbox.case_state("case-001", 1) == SENT and recorder.deliveries == {written.uids.sr_instance: 1}


def test_resent_result_is_kept_once_by_orthanc(orthanc, result_case, written, tmp_path):
    """The premise of at-least-once: a rebuilt result has the same UIDs, and Orthanc stores a
    re-sent SOP Instance UID once (and still acknowledges it, so the row is SENT)."""
    rebuilt = results.write_results(
        tmp_path / "rebuilt", result_case.record, result_case.sources, result_case.card
    )
    assert rebuilt.uids == written.uids
    for k, files in enumerate((written, rebuilt)):  # two outboxes: as if mark_sent was lost in a crash
        outbox = Outbox(tmp_path / f"serve-{k}.db")
        outbox.enqueue("case-001", 1, files.sr_path, ["orthanc"], now=T0)
        report = sender_for(outbox, to_orthanc(orthanc)).run_once(now=T0)
        assert report.sent == 1, [a.reason for a in report.attempts]
    assert orthanc.instance_count() == 1
    check_sr_matches(hd.sr.srread(io.BytesIO(orthanc.instance_file(written.uids.sr_instance))), result_case)


@pytest.mark.parametrize("verify", ["c-find", "none"])
def test_dimse_timeout_in_doubt_then_looked_up(verify, recorder, written, tmp_path):
    """A PACS that stores but answers after the DIMSE timeout: the attempt fails with the
    timeout as reason and the row stays in doubt. The next attempt asks first (C-FIND) and
    finds it: one delivery; with ``verify = "none"`` it re-sends the same UID (two)."""
    recorder.delay_s = 2.0
    dest = Destination("recorder", recorder.ae_title, "127.0.0.1", recorder.port, verify=verify)
    outbox = Outbox(tmp_path / "serve.db", BackoffPolicy(base_s=60))
    (item_id,) = outbox.enqueue("case-001", 1, written.sr_path, ["recorder"], now=T0)
    slow = Sender(outbox, SenderConfig((dest,), calling_ae_title=TEST_SCU_AE, dimse_timeout_s=0.5))
    attempt = slow.run_once(now=T0).attempts[0]
    assert attempt.outcome == "failed" and "no C-STORE response within 0.5 s" in attempt.reason
    assert outbox.get(item_id).state == PENDING and outbox.get(item_id).in_doubt_since == T0
    recorder.delay_s = 0.0
    for _ in range(40):  # the late answer's store completes in the receiver's thread
        if recorder.total():
            break
        time.sleep(0.1)
    report = sender_for(outbox, dest).run_once(now=T0 + 60)
    assert report.sent == 1 and outbox.get(item_id).state == SENT
    expected = 1 if verify == "c-find" else 2
    assert recorder.deliveries == {written.uids.sr_instance: expected}
    assert report.attempts[0].verify == (
        "present" if verify == "c-find" else "unavailable: verify = 'none' for recorder"
    )


def test_refusal_after_clean_start_clears_doubt(recorder, written, tmp_path):
    """A Failure status means not stored: the row is not in doubt afterwards (no C-FIND next time)."""
    recorder.status = 0xA700
    outbox = Outbox(tmp_path / "serve.db", BackoffPolicy(base_s=60))
    (item_id,) = outbox.enqueue("case-001", 1, written.sr_path, ["recorder"], now=T0)
    assert sender_for(outbox, to_recorder(recorder)).run_once(now=T0).attempts[0].outcome == "failed"
    assert outbox.get(item_id).in_doubt_since is None
    recorder.status = 0x0000
    assert sender_for(outbox, to_recorder(recorder)).run_once(now=T0 + 60).sent == 1
    assert recorder.finds == 0 and recorder.deliveries == {written.uids.sr_instance: 1}
