"""The outbox on its own (no network): idempotent enqueue, backoff schedule, DEAD and retry,
persistence across reopen, sharing a database file. Time is injected, never slept."""

from __future__ import annotations

import sqlite3

import pytest

pytest.importorskip("highdicom", reason="highdicom not installed: pip install 'drifa-edge[serve]'")

from drifa_edge.errors import BadInputError, ConfigError  # noqa: E402
from drifa_edge.serve import results  # noqa: E402
from drifa_edge.serve.outbox import DEAD, PENDING, SENT, BackoffPolicy, Outbox  # noqa: E402

T0 = 1_700_000_000.0


@pytest.fixture
def written(result_case, tmp_path):
    return results.write_results(
        tmp_path / "results", result_case.record, result_case.sources, result_case.card
    )


def test_enqueue_idempotent_one_row_per_destination(written, tmp_path):
    ob = Outbox(tmp_path / "serve.db")
    ids = ob.enqueue("case-001", 1, written.sr_path, ["pacs", "archive"], now=T0)
    again = ob.enqueue("case-001", 1, written.sr_path, ["archive", "pacs", "pacs"], now=T0 + 5)
    assert len(set(ids)) == 2 and sorted(again) == sorted(ids)
    rows = ob.list()
    assert len(rows) == 2
    assert {r.sop_instance_uid for r in rows} == {written.uids.sr_instance}
    assert {r.destination for r in rows} == {"pacs", "archive"}
    assert all(r.state == PENDING and r.next_attempt_at == T0 and r.attempts == 0 for r in rows)
    # a sent row is not reset by a second enqueue
    ob.mark_sent(ids[0], now=T0 + 1)
    ob.enqueue("case-001", 1, written.sr_path, ["pacs", "archive"], now=T0 + 2)
    assert ob.get(ids[0]).state == SENT


def test_backoff_schedule_doubles_up_to_max(written, tmp_path):
    policy = BackoffPolicy(base_s=60, factor=2, max_s=600, give_up_after_s=10 * 3600)
    ob = Outbox(tmp_path / "serve.db", policy)
    (item_id,) = ob.enqueue("case-001", 1, written.sr_path, ["pacs"], now=T0)
    now, waits = T0, []
    for _ in range(6):
        assert [i.id for i in ob.due(now)] == [item_id]
        item = ob.mark_failed(item_id, "refused", status=None, now=now)
        waits.append(item.next_attempt_at - now)
        assert ob.due(item.next_attempt_at - 0.001) == []  # not before its time
        now = item.next_attempt_at
    assert waits == [60, 120, 240, 480, 600, 600]
    assert item.attempts == 6 and item.last_error == "refused" and item.state == PENDING


def test_dead_after_give_up_time_then_retry(written, tmp_path):
    policy = BackoffPolicy(base_s=3600, max_s=3600, give_up_after_s=3 * 3600)
    ob = Outbox(tmp_path / "serve.db", policy)
    (item_id,) = ob.enqueue("case-001", 1, written.sr_path, ["pacs"], now=T0)
    for k in range(3):  # failures at 0 h, 1 h, 2 h: still within the 3 h
        assert ob.mark_failed(item_id, f"try {k}", now=T0 + k * 3600).state == PENDING
    item = ob.mark_failed(item_id, "still down", status=0xA700, now=T0 + 3 * 3600)
    assert (item.state, item.attempts, item.last_status) == (DEAD, 4, 0xA700)
    assert ob.due(T0 + 100 * 3600) == []
    assert ob.counts() == {PENDING: 0, SENT: 0, DEAD: 1}
    assert ob.case_state("case-001", 1) == DEAD
    assert written.sr_path.resolve() in ob.files_in_flight()
    assert ob.retry(now=T0 + 5 * 3600) == 1
    item = ob.get(item_id)
    assert (item.state, item.attempts, item.next_attempt_at) == (PENDING, 0, T0 + 5 * 3600)
    assert (item.created_at, item.retried_at) == (T0, T0 + 5 * 3600)
    # the give-up clock restarted: one failure right after retry does not kill it again
    assert ob.mark_failed(item_id, "blip", now=T0 + 5 * 3600 + 1).state == PENDING


def test_dead_after_max_attempts_and_retry_by_id(written, tmp_path):
    ob = Outbox(tmp_path / "serve.db", BackoffPolicy(base_s=1, max_s=1, max_attempts=2))
    a, b = ob.enqueue("case-001", 1, written.sr_path, ["pacs", "archive"], now=T0)
    ob.mark_failed(a, "x", now=T0)
    assert ob.mark_failed(a, "x", now=T0 + 1).state == DEAD
    assert ob.retry([b]) == 0  # b is not DEAD: untouched
    assert ob.retry([a]) == 1 and ob.get(a).state == PENDING


def test_states_survive_reopen_and_share_a_database(written, tmp_path):
    db = tmp_path / "serve.db"
    other = sqlite3.connect(db)  # the service's own tables in the same file
    other.execute("CREATE TABLE cases (id TEXT PRIMARY KEY, state TEXT)")
    other.execute("INSERT INTO cases VALUES ('case-001', 'DONE')")
    other.commit()
    ob = Outbox(db)
    a, b = ob.enqueue("case-001", 1, written.sr_path, ["pacs", "archive"], now=T0)
    ob.enqueue("case-001", 1, written.summary_path, ["pacs"], now=T0)
    ob.mark_sent(a, now=T0 + 1)
    ob.close()
    reopened = Outbox(db)
    assert reopened.get(a).state == SENT and reopened.get(b).state == PENDING
    assert reopened.case_state("case-001", 1) == PENDING
    assert reopened.case_state("case-001", 2) is None
    for item in reopened.due(T0 + 2):
        reopened.mark_sent(item.id, now=T0 + 2)
    assert reopened.case_state("case-001", 1) == SENT
    assert reopened.files_in_flight() == set()
    assert other.execute("SELECT state FROM cases").fetchone() == ("DONE",)
    assert sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_mark_failed_after_sent_keeps_sent(written, tmp_path):
    ob = Outbox(tmp_path / "serve.db")
    (a,) = ob.enqueue("case-001", 1, written.sr_path, ["pacs"], now=T0)
    ob.mark_sent(a, now=T0)
    assert ob.mark_failed(a, "late error", now=T0 + 1).state == SENT


def test_bad_inputs_are_clear(tmp_path):
    ob = Outbox(tmp_path / "serve.db")
    junk = tmp_path / "not-dicom.dcm"
    junk.write_bytes(b"hello")
    with pytest.raises(BadInputError, match="not-dicom.dcm"):
        ob.enqueue("c", 1, junk, ["pacs"])
    with pytest.raises(BadInputError, match="no row with id 42"):
        ob.mark_sent(42)
    with pytest.raises(ConfigError, match="unknown outbox state"):
        ob.list("LOST")
    with pytest.raises(ConfigError, match="base_s"):
        BackoffPolicy(base_s=0)


def test_enqueue_several_files_all_or_nothing(written, tmp_path):
    ob = Outbox(tmp_path / "serve.db")
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not dicom")
    with pytest.raises(BadInputError, match="junk.dcm"):
        ob.enqueue("case-001", 1, [written.sr_path, junk], ["pacs"], now=T0)
    assert ob.list() == []  # the good file was not enqueued alone
    ids = ob.enqueue("case-001", 1, written.paths, ["pacs", "archive"], now=T0)
    rows = [ob.get(i) for i in ids]
    assert [(r.sop_instance_uid, r.destination) for r in rows] == [
        (written.uids.sr_instance, "pacs"),
        (written.uids.sr_instance, "archive"),
        (written.uids.sc_instance, "pacs"),
        (written.uids.sc_instance, "archive"),
    ]


def test_in_doubt_mark_kept_until_sent_or_known_not_stored(written, tmp_path):
    ob = Outbox(tmp_path / "serve.db")
    (a,) = ob.enqueue("case-001", 1, written.sr_path, ["pacs"], now=T0)
    assert ob.get(a).in_doubt_since is None
    ob.mark_in_doubt(a, now=T0 + 1)
    ob.mark_in_doubt(a, now=T0 + 2)  # the earliest start is kept
    assert ob.mark_failed(a, "no answer", now=T0 + 3, in_doubt=True).in_doubt_since == T0 + 1
    assert ob.mark_failed(a, "no association", now=T0 + 4, in_doubt=None).in_doubt_since == T0 + 1
    assert ob.mark_failed(a, "refused", status=0xA700, now=T0 + 5, in_doubt=False).in_doubt_since is None
    ob.mark_in_doubt(a, now=T0 + 6)
    ob.mark_sent(a, now=T0 + 7)
    assert ob.get(a).state == SENT and ob.get(a).in_doubt_since is None


def test_schema_version_1_is_migrated(written, tmp_path):
    """A database made by the version without the in-doubt mark opens, keeps its rows, and gains it."""
    db = tmp_path / "serve.db"
    v1 = sqlite3.connect(db)
    v1.executescript(
        "CREATE TABLE outbox (id INTEGER PRIMARY KEY, case_id TEXT NOT NULL, result_version INTEGER NOT NULL, "
        "destination TEXT NOT NULL, file_path TEXT NOT NULL, sop_instance_uid TEXT NOT NULL, "
        "sop_class_uid TEXT NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, "
        "created_at REAL NOT NULL, retried_at REAL, next_attempt_at REAL NOT NULL, last_attempt_at REAL, "
        "sent_at REAL, last_status INTEGER, last_error TEXT, UNIQUE (sop_instance_uid, destination));"
        "CREATE TABLE outbox_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "INSERT INTO outbox_meta VALUES ('schema_version', '1');"
    )
    v1.execute(
        "INSERT INTO outbox (case_id, result_version, destination, file_path, sop_instance_uid, sop_class_uid, "
        "state, created_at, next_attempt_at) VALUES ('c', 1, 'pacs', ?, '1.2.3', '1.2.840.10008.5.1.4.1.1.88.34', "
        "'PENDING', ?, ?)",
        (str(written.sr_path), T0, T0),
    )
    v1.commit()
    v1.close()
    ob = Outbox(db)
    (row,) = ob.list()
    assert row.sop_instance_uid == "1.2.3" and row.state == PENDING and row.in_doubt_since is None
    ob.mark_in_doubt(row.id, now=T0)
    assert ob.get(row.id).in_doubt_since == T0
    ob.close()
    assert Outbox(db).get(row.id).in_doubt_since == T0  # reopening a migrated file is a no-op
