"""A persistent outbox of result files to send: SQLite (WAL), one row per (SOP Instance
UID, destination), with exponential backoff over hours and a visible DEAD state.

States: ``PENDING`` (due at ``next_attempt_at``) -> ``SENT``, or after repeated failures
``DEAD`` (given up; ``retry`` puts it back to ``PENDING``). A row is never deleted by the
outbox itself.

Delivery is **exactly once** where the destination can answer "do you have this SOP
Instance?", and at least once otherwise. The order is: the row is marked *in doubt*
(``in_doubt_since``, committed), C-STORE, the destination acknowledges, then
:meth:`Outbox.mark_sent` commits (and clears the mark). A crash between the
acknowledgement and that commit leaves the row ``PENDING`` *and in doubt*; so does an
attempt that got no answer (DIMSE timeout, abort), after which the destination may or may
not have stored the file. Before sending an in-doubt row again, the sender asks the
destination (``drifa_edge.serve.sender``: C-FIND at IMAGE level for the SOP Instance UID)
and, when it is there, marks the row sent without a second delivery. A destination that
cannot be asked (``verify = "none"``, or its C-FIND refused or failing) gets the file
again, with the same SOP Instance UID (result UIDs are deterministic,
``drifa_edge.serve.results``), so a PACS that keeps one copy per UID (Orthanc does by
default) stores it once: at most one extra delivery per crash. A crash never loses a row,
because rows leave ``PENDING`` only after a recorded acknowledgement, a verified presence
or a give-up.

Backoff: after the n-th failed attempt the row waits ``min(base_s * factor**(n-1),
max_s)`` seconds; it becomes ``DEAD`` when ``give_up_after_s`` has passed since it was
enqueued (or last retried), or after ``max_attempts`` failures if that is set. Defaults:
30 s doubling to at most 1 h, giving up after 72 h (about 80 attempts).

The outbox takes the path of a database file, which it may share with the service's
case store (its tables are ``outbox`` and ``outbox_meta``); each instance has its own
connection, guarded by a lock so the service's threads can share one ``Outbox``.
Timestamps are Unix seconds (float, UTC); every method takes ``now`` for tests.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from drifa_edge.errors import BadInputError, ConfigError

PENDING, SENT, DEAD = "PENDING", "SENT", "DEAD"
STATES = (PENDING, SENT, DEAD)
SCHEMA_VERSION = 2  # 2: in_doubt_since (1 is migrated on open)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    case_id TEXT NOT NULL,
    result_version INTEGER NOT NULL,
    destination TEXT NOT NULL,
    file_path TEXT NOT NULL,
    sop_instance_uid TEXT NOT NULL,
    sop_class_uid TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('PENDING', 'SENT', 'DEAD')),
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    retried_at REAL,
    next_attempt_at REAL NOT NULL,
    last_attempt_at REAL,
    sent_at REAL,
    last_status INTEGER,
    last_error TEXT,
    in_doubt_since REAL,
    UNIQUE (sop_instance_uid, destination)
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (state, next_attempt_at);
CREATE INDEX IF NOT EXISTS outbox_case ON outbox (case_id, result_version);
CREATE TABLE IF NOT EXISTS outbox_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True)
class BackoffPolicy:
    """When to try a failed send again, and when to give up (seconds)."""

    base_s: float = 30.0
    factor: float = 2.0
    max_s: float = 3600.0
    give_up_after_s: float = 72 * 3600.0
    max_attempts: int | None = None

    def __post_init__(self) -> None:
        if not self.base_s > 0 or not self.max_s >= self.base_s:
            raise ConfigError(
                f"backoff needs 0 < base_s <= max_s, got base_s={self.base_s}, max_s={self.max_s}"
            )
        if not self.factor >= 1:
            raise ConfigError(f"backoff factor must be >= 1, got {self.factor}")
        if not self.give_up_after_s > 0:
            raise ConfigError(f"give_up_after_s must be > 0, got {self.give_up_after_s}")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ConfigError(f"max_attempts must be >= 1 or None, got {self.max_attempts}")

    def delay(self, attempts: int) -> float:
        """Seconds to wait after the ``attempts``-th failure (1-based)."""
        return min(self.base_s * self.factor ** max(attempts - 1, 0), self.max_s)


@dataclass(frozen=True)
class OutboxItem:
    """One row: one file for one destination."""

    id: int
    case_id: str
    result_version: int
    destination: str
    file_path: Path
    sop_instance_uid: str
    sop_class_uid: str
    state: str
    attempts: int
    created_at: float
    retried_at: float | None  # the last manual retry; the give-up clock runs from here
    next_attempt_at: float
    last_attempt_at: float | None
    sent_at: float | None
    last_status: int | None
    last_error: str | None
    in_doubt_since: float | None = None  # a send started and its outcome is unknown (see module doc)


_COLUMNS = ", ".join(OutboxItem.__dataclass_fields__)


def _item(row: Sequence) -> OutboxItem:
    values = list(row)
    values[4] = Path(values[4])
    return OutboxItem(*values)


def dicom_identity(path: str | Path) -> tuple[str, str]:
    """(SOP Instance UID, SOP Class UID) of a DICOM file; :class:`BadInputError` if it has none."""
    import pydicom

    path = Path(path)
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID", "SOPClassUID"])
        return str(ds.SOPInstanceUID), str(ds.SOPClassUID)
    except (OSError, AttributeError, pydicom.errors.InvalidDicomError) as e:
        raise BadInputError(
            f"{path}: cannot enqueue it, not a readable DICOM file with a SOP Instance UID ({e}); "
            "write the result file before enqueueing it"
        ) from e


class Outbox:
    """The outbox table(s) in the SQLite database at ``db_path`` (created if absent)."""

    def __init__(self, db_path: str | Path, policy: BackoffPolicy | None = None, timeout_s: float = 30.0):
        self.db_path = Path(db_path)
        self.policy = policy or BackoffPolicy()
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            str(self.db_path), timeout=timeout_s, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # an enqueue survives power loss once it returns
        with self._lock:
            self._db.executescript(_SCHEMA)  # CREATE ... IF NOT EXISTS: safe on every start
        with self._tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO outbox_meta (key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )
            found = db.execute("SELECT value FROM outbox_meta WHERE key='schema_version'").fetchone()[0]
            if int(found) == 1:  # version 1 had no in-doubt mark: add it, every row starts certain
                db.execute("ALTER TABLE outbox ADD COLUMN in_doubt_since REAL")
                db.execute(
                    "UPDATE outbox_meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION),)
                )
                found = str(SCHEMA_VERSION)
        if int(found) != SCHEMA_VERSION:
            raise ConfigError(
                f"{self.db_path}: outbox schema version {found}, this drifa-edge reads {SCHEMA_VERSION}; "
                "use the drifa-edge version that created it or a new database"
            )

    # -------------------------------------------------------------- plumbing

    def _tx(self):
        return _Transaction(self._db, self._lock)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -------------------------------------------------------------- writes

    def enqueue(
        self,
        case_id: str,
        result_version: int,
        file_path: str | Path | Sequence[str | Path],
        destinations: Iterable[str],
        now: float | None = None,
    ) -> list[int]:
        """Add one PENDING row per (file, destination) for the DICOM file(s) ``file_path``;
        returns the row ids, file by file. Several files go in one transaction, so after a
        crash a case has all its rows or none. Idempotent: a (SOP Instance UID,
        destination) already present is left as it is (whatever its state), its id returned."""
        now = time.time() if now is None else now
        destinations = list(dict.fromkeys(destinations))
        if not destinations:
            raise ConfigError(f"case {case_id}: enqueue needs at least one destination")
        paths = [file_path] if isinstance(file_path, (str, Path)) else list(file_path)
        files = [(str(Path(p).resolve()), *dicom_identity(p)) for p in paths]  # read before locking
        ids = []
        with self._tx() as db:
            for path, sop_uid, sop_class in files:
                for dest in destinations:
                    db.execute(
                        "INSERT OR IGNORE INTO outbox (case_id, result_version, destination, file_path, "
                        "sop_instance_uid, sop_class_uid, state, created_at, next_attempt_at) "
                        "VALUES (?, ?, ?, ?, ?, ?, 'PENDING', ?, ?)",
                        (str(case_id), int(result_version), dest, path, sop_uid, sop_class, now, now),
                    )
                    row = db.execute(
                        "SELECT id FROM outbox WHERE sop_instance_uid=? AND destination=?", (sop_uid, dest)
                    ).fetchone()
                    ids.append(int(row[0]))
        return ids

    def mark_sent(self, item_id: int, status: int = 0, now: float | None = None) -> None:
        """Record the destination's acknowledgement (``status``: its C-STORE status)."""
        now = time.time() if now is None else now
        with self._tx() as db:
            self._get(db, item_id)
            db.execute(
                "UPDATE outbox SET state='SENT', sent_at=?, last_attempt_at=?, last_status=?, "
                "attempts=attempts+1, last_error=NULL, in_doubt_since=NULL WHERE id=?",
                (now, now, status, item_id),
            )

    def mark_failed(
        self,
        item_id: int,
        reason: str,
        status: int | None = None,
        now: float | None = None,
        in_doubt: bool | None = False,
    ) -> OutboxItem:
        """Record a failed attempt; schedules the next by the backoff policy or gives up
        (``DEAD``). Returns the updated row. A row already SENT stays SENT. ``in_doubt``:
        True when the destination may have stored the file (no answer came, or an earlier
        attempt's outcome is still unknown): the row stays in doubt and the next attempt
        asks first; False when it is known not stored (a refusal after a clean or
        verified-absent start): the mark is cleared; None leaves the mark as it is (nothing
        was sent, e.g. no association)."""
        now = time.time() if now is None else now
        with self._tx() as db:
            item = self._get(db, item_id)
            if item.state != PENDING:
                return item
            attempts = item.attempts + 1
            p = self.policy
            clock = item.retried_at if item.retried_at is not None else item.created_at
            give_up = now - clock >= p.give_up_after_s or (
                p.max_attempts is not None and attempts >= p.max_attempts
            )
            state = DEAD if give_up else PENDING
            next_at = now if give_up else now + p.delay(attempts)
            doubt = {True: item.in_doubt_since or now, False: None, None: item.in_doubt_since}[in_doubt]
            db.execute(
                "UPDATE outbox SET state=?, attempts=?, last_attempt_at=?, next_attempt_at=?, "
                "last_status=?, last_error=?, in_doubt_since=? WHERE id=?",
                (state, attempts, now, next_at, status, str(reason), doubt, item_id),
            )
            return self._get(db, item_id)

    def mark_in_doubt(self, item_id: int, now: float | None = None) -> None:
        """Record that a send of this row starts now (committed before the C-STORE leaves),
        so a crash before :meth:`mark_sent` is known on restart. Keeps an earlier mark."""
        now = time.time() if now is None else now
        with self._tx() as db:
            self._get(db, item_id)
            db.execute(
                "UPDATE outbox SET in_doubt_since=COALESCE(in_doubt_since, ?) WHERE id=? AND state='PENDING'",
                (now, item_id),
            )

    def mark_dead(self, item_id: int, reason: str, now: float | None = None) -> None:
        """Give up on a row at once (e.g. its file is gone and no retry can help)."""
        now = time.time() if now is None else now
        with self._tx() as db:
            self._get(db, item_id)
            db.execute(
                "UPDATE outbox SET state='DEAD', last_attempt_at=?, last_error=? WHERE id=? AND state='PENDING'",
                (now, str(reason), item_id),
            )

    def retry(self, item_ids: Iterable[int] | None = None, now: float | None = None) -> int:
        """Put DEAD rows (the given ids, or all) back to PENDING, due now, with the attempt
        count and the give-up clock restarted. Returns how many rows changed."""
        now = time.time() if now is None else now
        with self._tx() as db:
            if item_ids is None:
                cur = db.execute(
                    "UPDATE outbox SET state='PENDING', attempts=0, retried_at=?, next_attempt_at=? "
                    "WHERE state='DEAD'",
                    (now, now),
                )
                return cur.rowcount
            changed = 0
            for item_id in item_ids:
                self._get(db, item_id)
                cur = db.execute(
                    "UPDATE outbox SET state='PENDING', attempts=0, retried_at=?, next_attempt_at=? "
                    "WHERE id=? AND state='DEAD'",
                    (now, now, item_id),
                )
                changed += cur.rowcount
            return changed

    # -------------------------------------------------------------- reads

    def _get(self, db: sqlite3.Connection, item_id: int) -> OutboxItem:
        row = db.execute(f"SELECT {_COLUMNS} FROM outbox WHERE id=?", (item_id,)).fetchone()
        if row is None:
            raise BadInputError(f"outbox {self.db_path}: no row with id {item_id}; list them with list()")
        return _item(row)

    def get(self, item_id: int) -> OutboxItem:
        with self._tx() as db:
            return self._get(db, item_id)

    def due(self, now: float | None = None, limit: int = 100) -> list[OutboxItem]:
        """PENDING rows whose next attempt is due at ``now``, oldest due first."""
        now = time.time() if now is None else now
        with self._tx() as db:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM outbox WHERE state='PENDING' AND next_attempt_at<=? "
                "ORDER BY next_attempt_at, id LIMIT ?",
                (now, limit),
            ).fetchall()
        return [_item(r) for r in rows]

    def list(self, state: str | None = None, case_id: str | None = None) -> list[OutboxItem]:
        """Rows in ``state`` (or all), optionally of one case, in id order."""
        if state is not None and state not in STATES:
            raise ConfigError(f"unknown outbox state {state!r}; choose one of {STATES}")
        query, args = f"SELECT {_COLUMNS} FROM outbox WHERE 1=1", []
        if state is not None:
            query, args = query + " AND state=?", [*args, state]
        if case_id is not None:
            query, args = query + " AND case_id=?", [*args, str(case_id)]
        with self._tx() as db:
            return [_item(r) for r in db.execute(query + " ORDER BY id", args).fetchall()]

    def counts(self) -> dict[str, int]:
        """Rows per state (every state present, 0 when empty), for ``/status`` and metrics."""
        with self._tx() as db:
            rows = db.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state").fetchall()
        out = dict.fromkeys(STATES, 0)
        out.update({state: int(n) for state, n in rows})
        return out

    def case_state(self, case_id: str, result_version: int) -> str | None:
        """``SENT`` when every row of the case version is sent, ``DEAD`` when any is dead,
        ``PENDING`` otherwise, None when it has no rows."""
        with self._tx() as db:
            states = {
                s
                for (s,) in db.execute(
                    "SELECT DISTINCT state FROM outbox WHERE case_id=? AND result_version=?",
                    (str(case_id), int(result_version)),
                ).fetchall()
            }
        if not states:
            return None
        if DEAD in states:
            return DEAD
        return SENT if states == {SENT} else PENDING

    def files_in_flight(self) -> set[Path]:
        """Files that PENDING or DEAD rows still need; retention must not delete them."""
        with self._tx() as db:
            rows = db.execute("SELECT DISTINCT file_path FROM outbox WHERE state!='SENT'").fetchall()
        return {Path(r[0]) for r in rows}


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error) under the outbox's lock."""

    def __init__(self, db: sqlite3.Connection, lock: threading.Lock) -> None:
        self.db, self.lock = db, lock

    def __enter__(self) -> sqlite3.Connection:
        self.lock.acquire()
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self.lock.release()
            raise
        return self.db

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self.db.execute("ROLLBACK" if exc_type else "COMMIT")
        finally:
            self.lock.release()
