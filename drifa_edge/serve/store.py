"""The durable case store: SQLite in WAL mode with ``synchronous=FULL``, so a committed
transaction survives ``kill -9`` and power loss (the WAL is fsynced at commit).

States of a case::

    RECEIVING -> READY -> INFERRING -> DONE -> SENT
         \\          \\         \\          \\
          FAILED (reason)      FAILED     DEAD (a destination gave up)

* RECEIVING: instances arrive; assembly waits for every task and the quiet period.
* READY: the inputs (one file per task) are chosen; waiting for the worker.
* INFERRING: claimed by the worker. At start-up INFERRING goes back to READY
  (the worker died with it), so a crash re-runs the case; nothing was written.
* DONE: the result record is committed (``results`` table, a new version each run).
* SENT: every outbox item of the latest version was delivered (no destinations: DONE stays).
* FAILED: missing_task, ambiguous_series, multi_image_series, bad input (reason says).
* DEAD: sending gave up; ``serve-ctl retry`` brings it back.

A *late instance* (one that arrives after its case left RECEIVING) is stored and, with
``late_instance = "rerun"``, sends the case back to RECEIVING: it is assembled and inferred
again and gets the next result version; earlier versions are kept, never overwritten.
Every write is one transaction; ``generation`` counts the instances a case has received,
so a result computed from an older set of instances cannot mark a newer set DONE.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STATES = ("RECEIVING", "READY", "INFERRING", "DONE", "SENT", "FAILED", "DEAD")
IN_FLIGHT = ("RECEIVING", "READY", "INFERRING")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cases (
    case_id TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT,
    study_uid TEXT,
    patient TEXT,
    generation INTEGER NOT NULL DEFAULT 0,
    version INTEGER NOT NULL DEFAULT 0,
    inputs TEXT,
    ready_generation INTEGER,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    last_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS cases_state ON cases(state, last_at);
CREATE TABLE IF NOT EXISTS instances (
    sop_uid TEXT PRIMARY KEY,
    case_id TEXT NOT NULL,
    study_uid TEXT,
    series_uid TEXT,
    sop_class TEXT,
    task TEXT,
    content_sha256 TEXT NOT NULL,
    path TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    received_at REAL NOT NULL,
    series_number INTEGER,
    instance_number INTEGER,
    slice_thickness REAL,
    calling_ae TEXT
);
CREATE INDEX IF NOT EXISTS instances_case ON instances(case_id);
CREATE TABLE IF NOT EXISTS results (
    case_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    status TEXT NOT NULL,
    record TEXT NOT NULL,
    path TEXT,
    created REAL NOT NULL,
    PRIMARY KEY (case_id, version)
);
"""


@dataclass(frozen=True)
class Instance:
    """One stored image instance (a DICOM file, or an uploaded file for HTTP/watch cases)."""

    sop_uid: str
    case_id: str
    content_sha256: str
    path: str
    bytes: int
    study_uid: str | None = None
    series_uid: str | None = None
    sop_class: str | None = None
    task: str | None = None
    series_number: int | None = None
    instance_number: int | None = None
    slice_thickness: float | None = None
    calling_ae: str | None = None
    received_at: float = 0.0


@dataclass(frozen=True)
class CaseRow:
    case_id: str
    source: str
    state: str
    reason: str | None
    study_uid: str | None
    patient: str | None
    generation: int
    version: int
    inputs: dict[str, str] | None
    ready_generation: int | None
    created: float
    updated: float
    last_at: float


class Store:
    """Thread-safe access to ``store.sqlite`` (one connection, one lock; other processes such as
    ``serve-ctl`` open their own and wait on SQLite's busy timeout)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30.0)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=30000")
        self._lock = threading.RLock()
        for stmt in filter(str.strip, _SCHEMA.split(";")):
            self._db.execute(stmt)

    @property
    def connection(self) -> sqlite3.Connection:
        """The shared connection (use inside :meth:`transaction` only)."""
        return self._db

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error), under the store's lock."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------ instances

    def find_instance(self, sop_uid: str) -> Instance | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM instances WHERE sop_uid = ?", (sop_uid,)).fetchone()
        return None if row is None else Instance(**dict(row))

    def add_instance(
        self, inst: Instance, source: str, patient: str | None, rerun_late: bool
    ) -> tuple[str, CaseRow]:
        """Record ``inst`` and open or update its case, in one transaction.

        Returns (outcome, case) with outcome ``stored``, ``duplicate`` (same UID, same content:
        nothing changes), ``conflict`` (same UID, other content: nothing stored), ``late``
        (stored; the case went back to RECEIVING for a new version) or ``late_ignored``.
        """
        now = inst.received_at or time.time()
        with self.transaction() as db:
            old = db.execute(
                "SELECT content_sha256, case_id FROM instances WHERE sop_uid = ?", (inst.sop_uid,)
            ).fetchone()
            if old is not None:
                outcome = "duplicate" if old["content_sha256"] == inst.content_sha256 else "conflict"
                return outcome, self._case(db, old["case_id"])
            db.execute(
                "INSERT INTO instances (sop_uid, case_id, study_uid, series_uid, sop_class, task, content_sha256,"
                " path, bytes, received_at, series_number, instance_number, slice_thickness, calling_ae)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (inst.sop_uid, inst.case_id, inst.study_uid, inst.series_uid, inst.sop_class, inst.task,
                 inst.content_sha256, inst.path, inst.bytes, now, inst.series_number, inst.instance_number,
                 inst.slice_thickness, inst.calling_ae),
            )  # fmt: skip
            case = self._case(db, inst.case_id)
            if case is None:
                db.execute(
                    "INSERT INTO cases (case_id, source, state, study_uid, patient, generation, created, updated,"
                    " last_at) VALUES (?,?,?,?,?,?,?,?,?)",
                    (inst.case_id, source, "RECEIVING", inst.study_uid, patient, 1, now, now, now),
                )
                return "stored", self._case(db, inst.case_id)
            outcome = "stored"
            state = case.state
            if state not in ("RECEIVING",):
                if rerun_late or state in ("READY",):
                    outcome, state = ("late" if state != "READY" else "stored"), "RECEIVING"
                else:
                    outcome = "late_ignored"
            db.execute(
                "UPDATE cases SET generation = generation + 1, last_at = ?, updated = ?, state = ?,"
                " reason = CASE WHEN ? = 'late' THEN 'late_instance' ELSE reason END WHERE case_id = ?",
                (now, now, state, outcome, inst.case_id),
            )
            return outcome, self._case(db, inst.case_id)

    def instances_of(self, case_id: str) -> list[Instance]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM instances WHERE case_id = ? ORDER BY received_at", (case_id,)
            ).fetchall()
        return [Instance(**dict(r)) for r in rows]

    # ------------------------------------------------------------ cases

    def create_ready_case(
        self, case_id: str, source: str, inputs: dict[str, str], instances: list[Instance]
    ) -> CaseRow:
        """A case whose inputs are already known (HTTP upload, watch sub-folder): straight to READY.

        An existing case_id that is not in flight is re-run (next result version); one in flight
        raises ValueError."""
        now = time.time()
        with self.transaction() as db:
            case = self._case(db, case_id)
            if case is not None and case.state in IN_FLIGHT:
                raise ValueError(f"case {case_id!r} is still {case.state}")
            for inst in instances:
                db.execute(
                    "INSERT OR REPLACE INTO instances (sop_uid, case_id, task, content_sha256, path, bytes,"
                    " received_at, study_uid, series_uid, sop_class) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (inst.sop_uid, case_id, inst.task, inst.content_sha256, inst.path, inst.bytes, now,
                     inst.study_uid, inst.series_uid, inst.sop_class),
                )  # fmt: skip
            if case is None:
                db.execute(
                    "INSERT INTO cases (case_id, source, state, generation, inputs, ready_generation, created,"
                    " updated, last_at) VALUES (?,?,?,?,?,?,?,?,?)",
                    (case_id, source, "READY", 1, json.dumps(inputs), 1, now, now, now),
                )
            else:
                db.execute(
                    "UPDATE cases SET state='READY', reason=NULL, generation=generation+1, inputs=?,"
                    " ready_generation=generation+1, updated=?, last_at=? WHERE case_id=?",
                    (json.dumps(inputs), now, now, case_id),
                )
            return self._case(db, case_id)

    def get_case(self, case_id: str) -> CaseRow | None:
        with self._lock:
            return self._case(self._db, case_id)

    def cases(self, states: tuple[str, ...] | None = None, limit: int | None = None) -> list[CaseRow]:
        sql, args = "SELECT * FROM cases", []
        if states:
            sql += f" WHERE state IN ({','.join('?' * len(states))})"
            args = list(states)
        sql += " ORDER BY created"
        if limit:
            sql += f" LIMIT {int(limit)}"
        with self._lock:
            return [_case_row(r) for r in self._db.execute(sql, args).fetchall()]

    def quiet_cases(self, last_before: float) -> list[CaseRow]:
        """RECEIVING cases whose last instance arrived before ``last_before`` (seconds since the epoch)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM cases WHERE state='RECEIVING' AND last_at <= ? ORDER BY created",
                (last_before,),
            ).fetchall()
        return [_case_row(r) for r in rows]

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) AS n FROM cases GROUP BY state").fetchall()
        out = dict.fromkeys(STATES, 0)
        out.update({r["state"]: r["n"] for r in rows})
        return out

    def mark_ready(self, case_id: str, inputs: dict[str, str], generation: int) -> bool:
        """RECEIVING -> READY, only if no instance arrived since ``generation`` was read."""
        with self.transaction() as db:
            cur = db.execute(
                "UPDATE cases SET state='READY', reason=NULL, inputs=?, ready_generation=?, updated=?"
                " WHERE case_id=? AND state='RECEIVING' AND generation=?",
                (json.dumps(inputs), generation, time.time(), case_id, generation),
            )
            return cur.rowcount == 1

    def mark_failed(self, case_id: str, reason: str, from_states: tuple[str, ...] = IN_FLIGHT) -> bool:
        with self.transaction() as db:
            cur = db.execute(
                f"UPDATE cases SET state='FAILED', reason=?, updated=? WHERE case_id=?"
                f" AND state IN ({','.join('?' * len(from_states))})",
                (reason, time.time(), case_id, *from_states),
            )
            return cur.rowcount == 1

    def set_state(
        self, case_id: str, state: str, reason: str | None = None, from_states: tuple[str, ...] = ()
    ) -> bool:
        if state not in STATES:
            raise ValueError(f"unknown state {state!r}")
        sql = "UPDATE cases SET state=?, reason=?, updated=? WHERE case_id=?"
        args: list[Any] = [state, reason, time.time(), case_id]
        if from_states:
            sql += f" AND state IN ({','.join('?' * len(from_states))})"
            args += list(from_states)
        with self.transaction() as db:
            return db.execute(sql, args).rowcount == 1

    def claim_ready(self, limit: int) -> list[CaseRow]:
        """Up to ``limit`` READY cases, oldest first, moved to INFERRING in one transaction."""
        with self.transaction() as db:
            rows = db.execute(
                "SELECT * FROM cases WHERE state='READY' ORDER BY updated LIMIT ?", (limit,)
            ).fetchall()
            now = time.time()
            for r in rows:
                db.execute(
                    "UPDATE cases SET state='INFERRING', updated=? WHERE case_id=?", (now, r["case_id"])
                )
            return [_case_row(r) for r in rows]

    def finish(
        self, case_id: str, ready_generation: int, record: dict[str, Any], path: str | None
    ) -> tuple[int, str]:
        """Commit one result (the next version) and move the case on, in one transaction.

        The case goes DONE (record ok) or FAILED (record error), unless instances arrived since
        it was made READY: then it goes back to RECEIVING for another version. Returns
        (version, new state)."""
        with self.transaction() as db:
            case = self._case(db, case_id)
            version = case.version + 1
            ok = record.get("status") == "ok"
            db.execute(
                "INSERT INTO results (case_id, version, status, record, path, created) VALUES (?,?,?,?,?,?)",
                (case_id, version, record.get("status", "error"), json.dumps(record), path, time.time()),
            )
            if case.generation != ready_generation:
                state, reason = "RECEIVING", "late_instance"
            elif ok:
                state, reason = "DONE", None
            else:
                state, reason = "FAILED", f"bad_input: {record.get('error')}"
            db.execute(
                "UPDATE cases SET version=?, state=?, reason=?, updated=? WHERE case_id=?",
                (version, state, reason, time.time(), case_id),
            )
            return version, state

    def recover(self) -> list[str]:
        """At start-up: INFERRING -> READY (the worker died with them). Returns their ids."""
        with self.transaction() as db:
            ids = [r["case_id"] for r in db.execute("SELECT case_id FROM cases WHERE state='INFERRING'")]
            db.execute("UPDATE cases SET state='READY', updated=? WHERE state='INFERRING'", (time.time(),))
        return ids

    def delete_case(self, case_id: str) -> bool:
        """Remove a case, its instances and results (retention); refused for a case in flight."""
        with self.transaction() as db:
            case = self._case(db, case_id)
            if case is None or case.state in IN_FLIGHT:
                return False
            for table in ("instances", "results", "cases"):
                db.execute(f"DELETE FROM {table} WHERE case_id=?", (case_id,))
            return True

    # ------------------------------------------------------------ results

    def result(self, case_id: str, version: int | None = None) -> dict[str, Any] | None:
        """The record of ``version`` (default the latest) of a case, or None."""
        with self._lock:
            if version is None:
                row = self._db.execute(
                    "SELECT record FROM results WHERE case_id=? ORDER BY version DESC LIMIT 1", (case_id,)
                ).fetchone()
            else:
                row = self._db.execute(
                    "SELECT record FROM results WHERE case_id=? AND version=?", (case_id, version)
                ).fetchone()
        return None if row is None else json.loads(row["record"])

    def results(self, case_id: str) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT record FROM results WHERE case_id=? ORDER BY version", (case_id,)
            ).fetchall()
        return [json.loads(r["record"]) for r in rows]

    # ------------------------------------------------------------ helpers

    @staticmethod
    def _case(db: sqlite3.Connection, case_id: str) -> CaseRow | None:
        row = db.execute("SELECT * FROM cases WHERE case_id = ?", (case_id,)).fetchone()
        return None if row is None else _case_row(row)


def _case_row(row: sqlite3.Row) -> CaseRow:
    d = dict(row)
    d["inputs"] = json.loads(d["inputs"]) if d["inputs"] else None
    return CaseRow(**d)
