"""`drifa-edge serve` piped to a log: an event line at once, before the model is opened and
warmed up (which can take a while on a busy machine), then the ready line."""

from __future__ import annotations

import json

from serve_helpers import ServeProcess, serve_config


def test_serve_says_it_is_starting_before_it_is_ready(tiny_model, tmp_path):
    svc = ServeProcess(tiny_model, serve_config(tmp_path / "root"))
    try:
        lines = svc.log.read_text(errors="replace").splitlines()
    finally:
        svc.stop()
    events = [json.loads(line) for line in lines if line.startswith('{"event"')]
    assert [e["event"] for e in events[:2]] == ["starting", "ready"], lines
    assert events[0]["artifact"] == str(tiny_model)
    assert events[0]["root"] == events[1]["root"] == str(tmp_path / "root")
