"""The local HTTP API through a real uvicorn server: upload a case, read it back, status,
health, metrics, and the bearer token (missing / wrong -> 401 + audit line)."""

from __future__ import annotations

import io

import httpx
import pytest
from PIL import Image
from serve_helpers import serve_config, start_service, task_pixels

from drifa_edge.errors import ConfigError
from drifa_edge.serve.audit import read_audit
from drifa_edge.serve.config import HttpConfig

TOKEN = "t0ken-for-the-tests-0123456789"


@pytest.fixture
def service(tiny_model, tmp_path):
    svc = start_service(tiny_model, serve_config(tmp_path / "root", http={"token": TOKEN}))
    yield svc
    svc.stop()


def _png(task: str, i: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(task_pixels(task, i)).save(buf, format="PNG")
    return buf.getvalue()


def _client(svc, token: str | None = TOKEN) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=f"http://127.0.0.1:{svc.http_port}", headers=headers, timeout=60)


def test_post_case_returns_the_record_and_get_reads_it(service):
    with _client(service) as http:
        files = {"derm": ("a.png", _png("derm", 0)), "blood": ("b.png", _png("blood", 0))}
        r = http.post("/v1/cases", files=files, data={"case_id": "case-1"})
        assert r.status_code == 200, r.text
        record = r.json()
        assert record["case_id"] == "case-1" and record["status"] == "ok" and record["result_version"] == 1
        assert record["dicom"] is None and set(record["tasks"]) == {"derm", "blood"}
        sr = record.pop("sr")  # the response says why there is no SR; the stored record has no "sr"
        assert sr["expected"] is False and "not every input is a DICOM image" in sr["reason"]
        got = http.get("/v1/cases/case-1").json()
        assert got["state"] == "DONE" and got["result"] == record and got["sr"] == sr
        assert http.get("/v1/cases/nope").status_code == 404
        # same case_id again once finished: a re-run with the next version
        assert http.post("/v1/cases", files=files, data={"case_id": "case-1"}).json()["result_version"] == 2


def test_post_case_with_a_missing_task_or_a_bad_file(service):
    with _client(service) as http:
        r = http.post("/v1/cases", files={"derm": ("a.png", _png("derm", 0))})
        assert r.status_code == 400 and "blood" in r.json()["error"]
        r = http.post("/v1/cases", files={"derm": ("a.png", b"not a png"), "blood": ("b.png", _png("blood", 1))},
                      data={"case_id": "bad"})  # fmt: skip
        assert r.status_code == 422 and r.json()["state"] == "FAILED"
        assert "bad_input" in r.json()["reason"]
    assert any(
        e["event"] == "failed" and e.get("case_id") == "bad"
        for e in read_audit(service.cfg.root / "audit.jsonl")
    )


def test_status_health_and_metrics(service):
    with _client(service) as http:
        status = http.get("/status").json()
        assert status["build_sha256"] == service.predictor.model_sha256 and "cases" in status
        assert http.get("/health/live").json() == {"live": True}
        ready = http.get("/health/ready").json()
        assert ready["ready"] is True and set(ready["checks"]) >= {"model_warm", "receiver_listening"}
        files = {"derm": ("a.png", _png("derm", 2)), "blood": ("b.png", _png("blood", 2))}
        assert http.post("/v1/cases", files=files).status_code == 200
        assert http.get("/status").json()["cases"]["DONE"] == 1
        text = http.get("/metrics").text
        for line in ('drifa_cases{state="DONE"} 1.0', "drifa_ready 1.0", 'drifa_cases_inferred_total{status="ok"} 1.0',
                     "drifa_inference_batch_seconds_count 1.0"):  # fmt: skip
            assert line in text, line


@pytest.mark.parametrize("token,reason", [(None, "missing_token"), ("wrong-token-0123456789", "wrong_token")])
def test_token_required(service, token, reason):
    with _client(service, token) as http:
        r = http.get("/status")
        assert r.status_code == 401 and r.json()["reason"] == reason
        assert http.post("/v1/cases", files={"derm": ("a.png", b"x")}).status_code == 401
        assert http.get("/health/live").status_code == 200  # probes stay open
    lines = [e for e in read_audit(service.cfg.root / "audit.jsonl") if e["event"] == "http_unauthorized"]
    assert [e["reason"] for e in lines] == [reason, reason]
    assert service.store.cases() == []


def test_non_loopback_without_token_is_a_config_error():
    with pytest.raises(ConfigError, match="token"):
        HttpConfig(host="0.0.0.0")
    HttpConfig(host="0.0.0.0", token="x" * 32)


def test_post_answers_202_when_the_result_is_not_ready_in_time(tiny_model, tmp_path):
    from serve_helpers import wait_for

    svc = start_service(tiny_model, serve_config(tmp_path / "root", http={"result_timeout_s": 0.001}))
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{svc.http_port}", timeout=60) as http:
            files = {"derm": ("a.png", _png("derm", 4)), "blood": ("b.png", _png("blood", 4))}
            r = http.post("/v1/cases", files=files, data={"case_id": "slow-1"})
            assert r.status_code == 202 and r.json()["case_id"] == "slow-1"
            assert r.json()["state"] in ("READY", "INFERRING")
            done = wait_for(lambda: (v := http.get("/v1/cases/slow-1").json())["state"] == "DONE" and v, 30)
            assert done["result"]["status"] == "ok" and done["result_version"] == 1
    finally:
        svc.stop()
