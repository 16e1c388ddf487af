"""End to end in one process: DICOM in (pynetdicom and dcmtk's storescu) -> store -> assembly
-> inference -> JSON result record with the DICOM UIDs; the record equals predict's on the same files."""

from __future__ import annotations

import subprocess

import pytest
from serve_helpers import (
    dcmtk_storescu,
    make_study,
    send,
    serve_config,
    start_service,
    wait_for,
    write_files,
)

from drifa_edge.serve.audit import read_audit


@pytest.fixture
def service(tiny_model, tmp_path):
    svc = start_service(tiny_model, serve_config(tmp_path / "root"))
    yield svc
    svc.stop()


def _done(svc, n):
    return lambda: svc.store.counts()["DONE"] >= n


def test_pynetdicom_study_gives_a_result_record(service):
    study = make_study(0)
    assert send(study, service.dicom_port) == [0, 0]
    wait_for(_done(service, 1), 30)
    (case,) = service.store.cases()
    record = service.store.result(case.case_id)
    assert record["status"] == "ok" and record["result_version"] == 1
    assert record["dicom"]["study_instance_uid"] == study[0].StudyInstanceUID
    assert record["dicom"]["sop_instance_uids"] == {
        "derm": study[0].SOPInstanceUID,
        "blood": study[1].SOPInstanceUID,
    }
    assert set(record["tasks"]) == {"derm", "blood"}
    saved = (service.cfg.root / "results" / case.case_id / "v1.json").read_text()
    assert '"result_version": 1' in saved
    events = [e["event"] for e in read_audit(service.cfg.root / "audit.jsonl")]
    for step in ("started", "received", "case_ready", "inferred"):
        assert step in events
    text = (service.cfg.root / "audit.jsonl").read_text()
    assert "Test^Patient" not in text and "PAT-0" not in text  # names and PatientID never logged


def test_record_matches_predict_on_the_same_files(service, tiny_model):
    """Same input rules as predict: probabilities of the service record equal predict's (torch, seeded)."""
    from drifa_edge.inference.engine import EngineConfig
    from drifa_edge.inference.manifest import Case
    from drifa_edge.inference.predict import predict_cases
    from drifa_edge.runtimes.base import RuntimeOptions

    send(make_study(1), service.dicom_port)
    wait_for(_done(service, 1), 30)
    (case,) = service.store.cases()
    record = service.store.result(case.case_id)
    inputs = {t: p for t, p in case.inputs.items()}
    got = []
    predict_cases(tiny_model, [Case(case.case_id, inputs)], None, runtime="torch", options=RuntimeOptions(threads=1),
                  engine_cfg=EngineConfig(samples=4, seed=0), on_record=got.append)  # fmt: skip
    for task in ("derm", "blood"):
        # both rounded to 6 decimals (threads may differ): one unit of rounding plus float error
        assert record["tasks"][task]["probabilities"] == pytest.approx(
            got[0]["tasks"][task]["probabilities"], abs=2e-6
        )


def test_dcmtk_storescu_study(service, tmp_path):
    storescu = dcmtk_storescu()
    files = write_files(make_study(2), tmp_path / "study")
    run = subprocess.run([storescu, "-aet", "STORESCU", "-aec", "DRIFA_EDGE", "127.0.0.1", str(service.dicom_port),
                          *map(str, files)], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert run.returncode == 0, run.stderr
    wait_for(_done(service, 1), 30)
    (case,) = service.store.cases()
    assert service.store.result(case.case_id)["status"] == "ok"
    calling = {i.calling_ae for i in service.store.instances_of(case.case_id)}
    assert calling == {"STORESCU"}


def test_dicom_tls_receiver(tiny_model, tmp_path):
    """[dicom.tls]: a TLS association stores the study; a plain one gets nothing stored."""
    import shutil
    import ssl

    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not installed; needed to make a test certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    svc = start_service(
        tiny_model,
        serve_config(tmp_path / "root", dicom={"tls": {"cert_file": str(cert), "key_file": str(key)}}),
    )
    try:
        assert send(make_study(0), svc.dicom_port, timeout=3) == [None, None]  # plain: no association
        client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))
        assert send(make_study(1), svc.dicom_port, tls_args=(client, "localhost")) == [0, 0]
        wait_for(_done(svc, 1), 30)
        assert len(svc.store.cases()) == 1
    finally:
        svc.stop()
