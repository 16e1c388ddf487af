"""Config loading (the shipped example, unknown keys, bad values), retention sweeps, and the
serve-ctl commands on a real store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from serve_helpers import REPO, make_study

from drifa_edge.errors import ConfigError
from drifa_edge.serve.audit import AuditLog, read_audit
from drifa_edge.serve.config import ServeConfig, example_config, load_config
from drifa_edge.serve.retention import Retention
from drifa_edge.serve.store import Instance, Store


def _cli(*args, cwd=None):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    code = "import sys; from drifa_edge.cli import main; sys.argv[0] = 'drifa-edge'; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_example_config_loads_and_keeps_safe_defaults(tmp_path):
    path = tmp_path / "serve.toml"
    path.write_text(example_config())
    cfg = load_config(path)
    default = ServeConfig()
    assert cfg.dicom.host == default.dicom.host == "127.0.0.1" and cfg.http.host == "127.0.0.1"
    assert default.dicom.allowed_calling_aes == ()  # nobody until listed
    assert cfg.dicom.allowed_calling_aes == ("STORESCU", "MODALITY1")
    assert [r.task for r in cfg.assembly.routes] == ["derm", "blood", "blood"]
    assert cfg.root == tmp_path / "drifa-serve"  # relative to the file
    path.write_text(example_config().replace('# folder = "inbox"', 'folder = "inbox"'))
    assert load_config(path).watch.folder == str(tmp_path / "inbox")
    assert cfg.storage.disk_floor_mb == default.storage.disk_floor_mb
    for section in ("inference", "retention", "outbox", "watch", "http"):
        assert getattr(cfg, section) == getattr(default, section), section


def test_config_errors_name_the_setting(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[dicom]\nae_titel = 'X'\n")
    with pytest.raises(ConfigError, match="ae_titel.*Did you mean 'ae_title'"):
        load_config(path)
    path.write_text("[assembly]\nmulti_image = 'median'\n")
    with pytest.raises(ConfigError, match="multi_image"):
        load_config(path)
    path.write_text("[assembly\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)
    with pytest.raises(ConfigError, match="example-config"):
        load_config(tmp_path / "absent.toml")
    dest = "[[destinations]]\nname = 'pacs'\nae_title = 'PACS'\nhost = '10.0.0.5'\nport = 104\n"
    path.write_text(dest + "verify = 'storage-commitment'\n")
    with pytest.raises(ConfigError, match="verify must be 'c-find' or 'none'"):
        load_config(path)
    path.write_text(dest + "verify = 'none'\n")
    assert load_config(path).destinations[0].verify == "none"
    path.write_text(dest)
    assert load_config(path).destinations[0].verify == "c-find"  # the default: exactly once where possible


def test_example_config_printed_by_cli():
    run = _cli("serve-ctl", "example-config")
    assert run.returncode == 0 and run.stdout == example_config()


def _done_case(store, case_id, tmp_path, age_s=0.0):
    f = tmp_path / f"{case_id}.png"
    f.write_bytes(b"x" * 1000)
    store.create_ready_case(
        case_id, "http", {"derm": str(f)}, [Instance(f"u-{case_id}", case_id, "h", str(f), 1000, task="derm")]
    )
    (claimed,) = store.claim_ready(1)
    store.finish(case_id, claimed.ready_generation, {"case_id": case_id, "status": "ok"}, None)
    with store.transaction() as db:
        db.execute("UPDATE cases SET updated = updated - ? WHERE case_id = ?", (age_s, case_id))


def test_retention_oldest_first_never_in_flight(tmp_path):
    cfg = ServeConfig.from_dict(
        {"storage": {"root": str(tmp_path)}, "retention": {"max_age_hours": 1.0, "max_gb": 10}}
    )
    store = Store(tmp_path / "store.sqlite")
    audit = AuditLog(tmp_path / "audit.jsonl")
    try:
        _done_case(store, "old", tmp_path, age_s=7200)
        _done_case(store, "new", tmp_path)
        (tmp_path / "results" / "old").mkdir(parents=True)
        (tmp_path / "results" / "old" / "v1.json").write_text("{}")
        store.create_ready_case("flight", "http", {}, [])
        with store.transaction() as db:  # older than everything, but READY
            db.execute("UPDATE cases SET updated = updated - 99999 WHERE case_id = 'flight'")
        assert Retention(store, audit, cfg).sweep(time.time()) == ["old"]
        assert not (tmp_path / "results" / "old").exists()
        cfg_small = ServeConfig.from_dict({"storage": {"root": str(tmp_path)}, "retention": {"max_gb": 1e-9}})
        (tmp_path / "instances" / "new").mkdir(parents=True)
        (tmp_path / "instances" / "new" / "a.dcm").write_bytes(b"x" * 100)
        assert Retention(store, audit, cfg_small).sweep(time.time()) == ["new"]
        assert {c.case_id for c in store.cases()} == {"flight"}
        _done_case(store, "last", tmp_path)
        cfg_low = ServeConfig.from_dict({"storage": {"root": str(tmp_path), "disk_floor_mb": 1e12}})
        assert Retention(store, audit, cfg_low).sweep(time.time()) == ["last"]  # free < 2 x floor
        assert {c.case_id for c in store.cases()} == {"flight"}
        lines = [e for e in read_audit(tmp_path / "audit.jsonl") if e["event"] == "deleted"]
        assert [(e["case_id"], e["reason"]) for e in lines] == [
            ("old", "max_age"), ("new", "max_size"), ("last", "disk_low")
        ]  # fmt: skip
    finally:
        store.close()
        audit.close()


def test_serve_ctl_list_outbox_and_retry_dead(tmp_path):
    from drifa_edge.serve.outbox import Outbox

    store = Store(tmp_path / "store.sqlite")
    _done_case(store, "c1", tmp_path)
    store.set_state("c1", "DEAD", "send_gave_up")
    sr = tmp_path / "sr.dcm"
    make_study(0)[0].save_as(sr, enforce_file_format=True)
    outbox = Outbox(tmp_path / "store.sqlite")
    (row,) = outbox.enqueue("c1", 1, sr, ["pacs"])
    outbox.mark_dead(row, "gave up")
    outbox.close()
    store.close()
    listed = [
        json.loads(line) for line in _cli("serve-ctl", "list", "--root", str(tmp_path)).stdout.splitlines()
    ]
    assert [(c["case_id"], c["state"]) for c in listed] == [("c1", "DEAD")]
    items = [
        json.loads(line) for line in _cli("serve-ctl", "outbox", "--root", str(tmp_path)).stdout.splitlines()
    ]
    assert [(i["case_id"], i["state"]) for i in items] == [("c1", "DEAD")]
    run = _cli("serve-ctl", "retry", "--root", str(tmp_path))
    assert json.loads(run.stdout) == {"retried": 1}, run.stderr
    store = Store(tmp_path / "store.sqlite")
    assert store.get_case("c1").state == "DONE"
    store.close()
    assert _cli("serve-ctl", "list", "--root", str(tmp_path / "nowhere")).returncode == 2


def test_port_in_use_is_a_config_error(tiny_model, tmp_path):
    import socket

    from serve_helpers import serve_config, start_service

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
            start_service(tiny_model, serve_config(tmp_path / "root", dicom={"port": port}))
