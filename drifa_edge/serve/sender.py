"""C-STORE of due outbox rows to the configured destinations (PACS), with pynetdicom.

:meth:`Sender.run_once` lists what is due, opens one association per destination, sends
each file, and records every outcome in the outbox: an acknowledgement with a Success or
Warning status (e.g. 0xB000 coercion) is ``mark_sent``; a Failure status, a missing
response (DIMSE timeout, abort), a rejected or unreachable association each become
``mark_failed`` with the status and a reason that says which destination and why. A file
that is gone is given up at once (``DEAD``): no retry can bring it back.

Exactly once: each row is marked in doubt (committed) before its C-STORE leaves. A row
still in doubt at its next attempt (a crash between the acknowledgement and ``mark_sent``,
or an attempt that got no answer) is first looked up at the destination with a C-FIND at
IMAGE level (Study Root, keys Study/Series/SOP Instance UID; PS3.4 C.4.1) when the
destination's ``verify`` is ``"c-find"`` (the default): present -> ``mark_sent`` without a
second delivery (``Attempt.verify == "present"``); absent -> sent. A destination that
refuses the query context or answers with a failure, or ``verify = "none"``, gets the file
again with the same SOP Instance UID: at least once (``Attempt.verify`` says why).
Storage Commitment (N-ACTION) is not implemented: its answer may come on a separate
association the sender would have to accept.

DICOM TLS: a destination with :class:`DicomTls` is reached through pynetdicom's
``tls_args`` (an ``ssl.SSLContext`` verifying the peer against ``ca_file``, with an
optional client certificate for mutual TLS).
"""

from __future__ import annotations

import logging
import os
import ssl
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from drifa_edge.errors import ConfigError, missing_dependency
from drifa_edge.serve.outbox import Outbox, OutboxItem

log = logging.getLogger(__name__)

# the outcomes one attempt can have, for counting and the audit log
SENT_OK, FAILED, GAVE_UP = "sent", "failed", "dead"
VERIFY_MODES = ("c-find", "none")  # how an in-doubt row is checked at a destination (module doc)


def _check_ae(title: str, what: str) -> None:
    if not title or len(title) > 16 or "\\" in title or not title.isascii() or title != title.strip():
        raise ConfigError(
            f"{what} {title!r} is not a valid AE title (1-16 ASCII characters, no backslash, "
            "no leading or trailing spaces)"
        )


@dataclass(frozen=True)
class DicomTls:
    """TLS for one destination: trust ``ca_file``; ``cert_file``/``key_file`` for mutual TLS."""

    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None
    check_hostname: bool = True

    def __post_init__(self) -> None:
        for name in ("ca_file", "cert_file", "key_file"):
            value = getattr(self, name)
            if value is not None and not Path(value).is_file():
                raise ConfigError(f"DICOM TLS {name} {value} does not exist; give the path of a PEM file")
        if (self.cert_file is None) != (self.key_file is None):
            raise ConfigError("DICOM TLS: give both cert_file and key_file (mutual TLS) or neither")

    def context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca_file))
        ctx.check_hostname = self.check_hostname
        if self.cert_file is not None:
            ctx.load_cert_chain(str(self.cert_file), str(self.key_file))
        return ctx


@dataclass(frozen=True)
class Destination:
    """A C-STORE SCP to send results to. ``name`` is the key used in the outbox."""

    name: str
    ae_title: str
    host: str
    port: int
    tls: DicomTls | None = None
    verify: str = "c-find"  # how an in-doubt row is looked up before resending (VERIFY_MODES)

    def __post_init__(self) -> None:
        if self.verify not in VERIFY_MODES:
            raise ConfigError(
                f"destination {self.name}: verify must be one of {VERIFY_MODES}, got {self.verify!r}; "
                "'none' for a destination that cannot answer a C-FIND (delivery is then at least once)"
            )
        if not self.name or not self.name.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"destination name {self.name!r} must be alphanumeric (with - or _)")
        _check_ae(self.ae_title, f"destination {self.name}: AE title")
        if not 0 < int(self.port) < 65536:
            raise ConfigError(f"destination {self.name}: port must be 1-65535, got {self.port}")

    def __str__(self) -> str:
        return f"{self.name} ({self.ae_title}@{self.host}:{self.port}{' TLS' if self.tls else ''})"


@dataclass(frozen=True)
class SenderConfig:
    """Who we are and how long to wait (seconds)."""

    destinations: tuple[Destination, ...]
    calling_ae_title: str = "DRIFA_EDGE"
    connection_timeout_s: float = 10.0
    acse_timeout_s: float = 30.0
    dimse_timeout_s: float = 60.0
    network_timeout_s: float = 60.0
    batch_limit: int = 100  # rows per run_once

    def __post_init__(self) -> None:
        _check_ae(self.calling_ae_title, "calling AE title")
        names = [d.name for d in self.destinations]
        if len(set(names)) != len(names):
            raise ConfigError(f"destination names must be unique, got {names}")
        for key in ("connection_timeout_s", "acse_timeout_s", "dimse_timeout_s", "network_timeout_s"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"{key} must be > 0, got {getattr(self, key)}")
        if self.batch_limit < 1:
            raise ConfigError(f"batch_limit must be >= 1, got {self.batch_limit}")

    def destination(self, name: str) -> Destination | None:
        return next((d for d in self.destinations if d.name == name), None)


@dataclass(frozen=True)
class Attempt:
    """What happened to one outbox row in one run."""

    item: OutboxItem
    outcome: str  # SENT_OK, FAILED or GAVE_UP (FAILED rows that reached give-up are GAVE_UP)
    status: int | None
    reason: str | None
    seconds: float
    # in-doubt rows only: "present" (found at the destination, not resent), "absent" (resent),
    # or why it could not be looked up ("unavailable: ...", resent with the same UID)
    verify: str | None = None


@dataclass
class SendReport:
    attempts: list[Attempt] = field(default_factory=list)

    def count(self, outcome: str) -> int:
        return sum(a.outcome == outcome for a in self.attempts)

    @property
    def sent(self) -> int:
        return self.count(SENT_OK)

    @property
    def failed(self) -> int:
        return self.count(FAILED) + self.count(GAVE_UP)


def _crash_point(name: str) -> None:
    """Test-only: ``DRIFA_EDGE_CRASH_AT=<name>`` exits here (same contract as the service's
    ``drifa_edge.serve.crash``; kept local so this module stands alone)."""
    if os.environ.get("DRIFA_EDGE_CRASH_AT", "").partition(":")[0] == name:
        sys.stderr.write(f"drifa-edge: test crash point {name!r} reached, exiting\n")
        sys.stderr.flush()
        os._exit(137)


class _TransportErrors(logging.Handler):
    """Collects pynetdicom's transport error lines while installed (pynetdicom reports a
    refused connection or a failed TLS handshake only in its log)."""

    LOGGER = "pynetdicom.transport"

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "Association request failed" not in message:  # the generic line; keep the cause
            self.messages.append(message)

    def __enter__(self) -> _TransportErrors:
        logging.getLogger(self.LOGGER).addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger(self.LOGGER).removeHandler(self)


class Sender:
    """Delivers due outbox rows; one instance per process (see the module doc on exactly once).

    ``on_attempt`` is called after each recorded outcome (for the audit log and metrics)."""

    def __init__(
        self,
        outbox: Outbox,
        config: SenderConfig,
        on_attempt: Callable[[Attempt], None] | None = None,
    ) -> None:
        try:
            import pynetdicom  # noqa: F401
        except ImportError as e:
            raise missing_dependency("pynetdicom", "serve") from e
        self.outbox = outbox
        self.config = config
        self.on_attempt = on_attempt

    def run_once(self, now: float | None = None) -> SendReport:
        """Send every row due at ``now``; returns what happened. Never raises for a send
        failure (it is recorded); raises only for programming or database errors."""
        now = time.time() if now is None else now
        report = SendReport()
        by_destination: dict[str, list[OutboxItem]] = {}
        for item in self.outbox.due(now, limit=self.config.batch_limit):
            by_destination.setdefault(item.destination, []).append(item)
        for name, items in by_destination.items():
            dest = self.config.destination(name)
            if dest is None:
                known = [d.name for d in self.config.destinations]
                reason = f"destination {name!r} is not in the configuration (known: {known})"
                for item in items:
                    self._record(report, item, None, reason, now, 0.0, in_doubt=None)
                continue
            self._send_to(dest, items, report, now)
        return report

    def run_forever(self, stop: threading.Event, interval_s: float = 1.0) -> None:
        """Call :meth:`run_once` every ``interval_s`` seconds until ``stop`` is set (for the
        service's sender thread). A database error is logged and retried, not raised."""
        while not stop.is_set():
            try:
                self.run_once()
            except Exception:  # keep the thread alive; the rows stay in the outbox
                log.exception("sender run failed; trying again in %.1f s", interval_s)
            stop.wait(interval_s)

    # -------------------------------------------------------------- one destination

    def _send_to(self, dest: Destination, items: list[OutboxItem], report: SendReport, now: float) -> None:
        ready = []
        for item in items:
            if not item.file_path.is_file():
                self.outbox.mark_dead(item.id, f"file {item.file_path} is gone; rebuild the result", now)
                self._notify(report, Attempt(self.outbox.get(item.id), GAVE_UP, None, "file missing", 0.0))
            else:
                ready.append(item)
        if not ready:
            return
        started = time.monotonic()
        doubtful = any(i.in_doubt_since is not None for i in ready)
        assoc, reason = self._associate(dest, ready, find=doubtful and dest.verify == "c-find")
        if assoc is None:
            for item in ready:
                self._record(report, item, None, reason, now, time.monotonic() - started, in_doubt=None)
            return
        try:
            for item in ready:
                t0 = time.monotonic()
                verify = None
                if item.in_doubt_since is not None:
                    verify = self._verify(assoc, dest, item)
                    if verify == "present":
                        self.outbox.mark_sent(item.id, 0, now)
                        log.info("%s already at %s: marked sent, not resent", item.sop_instance_uid, dest)
                        updated = self.outbox.get(item.id)
                        self._notify(
                            report, Attempt(updated, SENT_OK, None, None, time.monotonic() - t0, verify)
                        )
                        continue
                if assoc.is_established:
                    self.outbox.mark_in_doubt(item.id, now)
                    status, why, in_doubt = self._store(assoc, dest, item)
                    if in_doubt is False and item.in_doubt_since is not None and verify != "absent":
                        in_doubt = True  # refused now, but an earlier attempt may have stored it
                else:
                    status, why, in_doubt = None, f"{dest}: association lost", None
                self._record(report, item, status, why, now, time.monotonic() - t0, in_doubt, verify)
                if not assoc.is_established:  # aborted mid-way: the rest fail now, retried later
                    for rest in ready[ready.index(item) + 1 :]:
                        self._record(report, rest, None, f"{dest}: association lost", now, 0.0, in_doubt=None)
                    break
        finally:
            if assoc.is_established:
                assoc.release()

    def _verify(self, assoc, dest: Destination, item: OutboxItem) -> str:
        """Look an in-doubt row up at the destination: ``"present"``, ``"absent"`` or
        ``"unavailable: <why>"`` (the caller then sends it: at least once)."""
        import pydicom
        from pydicom.dataset import Dataset
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND

        if dest.verify != "c-find":
            return f"unavailable: verify = {dest.verify!r} for {dest.name}"
        if not any(c.abstract_syntax == FIND for c in assoc.accepted_contexts):
            return f"unavailable: {dest} did not accept the Study Root C-FIND context"
        try:
            src = pydicom.dcmread(item.file_path, stop_before_pixels=True,
                                  specific_tags=["StudyInstanceUID", "SeriesInstanceUID"])  # fmt: skip
            query = Dataset()
            query.QueryRetrieveLevel = "IMAGE"
            query.StudyInstanceUID = src.StudyInstanceUID
            query.SeriesInstanceUID = src.SeriesInstanceUID
            query.SOPInstanceUID = item.sop_instance_uid
            found, final = False, None
            for status, identifier in assoc.send_c_find(query, FIND):
                if not status:  # no answer (timeout, abort)
                    return f"unavailable: no C-FIND response from {dest}"
                code = int(status.Status)
                if code in (0xFF00, 0xFF01):
                    found = found or str(getattr(identifier, "SOPInstanceUID", "")) == item.sop_instance_uid
                else:
                    final = code
        except Exception as e:  # an unreadable file or a protocol error: send as without verification
            return f"unavailable: C-FIND at {dest} failed ({type(e).__name__}: {e})"
        if final != 0x0000:
            return f"unavailable: C-FIND at {dest} ended with status 0x{final or 0:04X}"
        return "present" if found else "absent"

    def _associate(self, dest: Destination, items: Sequence[OutboxItem], find: bool = False):
        from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
        from pynetdicom import AE, evt
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

        cfg = self.config
        ae = AE(ae_title=cfg.calling_ae_title)
        ae.connection_timeout = cfg.connection_timeout_s
        ae.acse_timeout = cfg.acse_timeout_s
        ae.dimse_timeout = cfg.dimse_timeout_s
        ae.network_timeout = cfg.network_timeout_s
        for sop_class in sorted({i.sop_class_uid for i in items})[: 127 if find else 128]:
            ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        if find:  # to look up in-doubt rows before resending them
            ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        rejected: list[str] = []
        connected: list[bool] = []

        def on_rejected(event) -> None:
            p = event.primitive
            rejected.append(f"{p.result_str}: {p.reason_str} (source {p.source_str})")

        tls_args = None
        if dest.tls is not None:
            try:
                tls_args = (dest.tls.context(), dest.host)
            except (OSError, ssl.SSLError) as e:
                return None, f"{dest}: TLS setup failed ({e})"
        handlers = [
            (evt.EVT_REJECTED, on_rejected),
            (evt.EVT_CONN_OPEN, lambda event: connected.append(True)),
        ]
        with _TransportErrors() as errors:  # pynetdicom logs why a connection failed (TLS, refused)
            try:
                assoc = ae.associate(
                    dest.host,
                    int(dest.port),
                    ae_title=dest.ae_title,
                    tls_args=tls_args,
                    evt_handlers=handlers,
                )
            except (OSError, ssl.SSLError) as e:
                return None, f"{dest}: cannot connect ({e})"
        if assoc.is_established:
            return assoc, None
        if not connected:
            why = errors.messages[-1] if errors.messages else f"no answer within {cfg.connection_timeout_s} s"
            return None, f"{dest}: cannot connect ({why})"
        if assoc.is_rejected:
            return None, f"{dest}: association rejected ({'; '.join(rejected) or 'no reason given'})"
        if assoc.is_aborted:
            return None, f"{dest}: association aborted by the peer"
        return None, f"{dest}: no association (no A-ASSOCIATE answer within {cfg.acse_timeout_s} s)"

    def _store(
        self, assoc, dest: Destination, item: OutboxItem
    ) -> tuple[int | None, str | None, bool | None]:
        """(status, failure reason or None, in doubt): in doubt when no answer came."""
        from pynetdicom.status import code_to_category

        _crash_point("before_send")
        started = time.monotonic()
        try:
            response = assoc.send_c_store(item.file_path)
        except Exception as e:  # no accepted context, unreadable or corrupt file: record, go on
            return None, f"{dest}: C-STORE of {item.file_path.name} not sent ({e})", False
        if "Status" not in response:
            waited = time.monotonic() - started
            if waited < 0.9 * self.config.dimse_timeout_s:  # too early for our timeout: the peer aborted
                return None, f"{dest}: association aborted by the peer during C-STORE, maybe stored", True
            return None, f"{dest}: no C-STORE response within {self.config.dimse_timeout_s} s", True
        status = int(response.Status)
        _crash_point("after_send")
        category = code_to_category(status)
        if category in ("Success", "Warning"):
            return status, None, False
        comment = response.get("ErrorComment", "")
        return (
            status,
            f"{dest}: C-STORE status 0x{status:04X} ({category}{': ' + comment if comment else ''})",
            False,
        )

    # -------------------------------------------------------------- recording

    def _record(self, report, item, status, reason, now, seconds, in_doubt=False, verify=None) -> None:
        if reason is None:
            self.outbox.mark_sent(item.id, status or 0, now)
            attempt = Attempt(self.outbox.get(item.id), SENT_OK, status, None, seconds, verify)
        else:
            updated = self.outbox.mark_failed(item.id, reason, status, now, in_doubt=in_doubt)
            outcome = GAVE_UP if updated.state == "DEAD" else FAILED
            log.warning("send %s to %s failed: %s", item.sop_instance_uid, item.destination, reason)
            attempt = Attempt(updated, outcome, status, reason, seconds, verify)
        self._notify(report, attempt)

    def _notify(self, report: SendReport, attempt: Attempt) -> None:
        report.attempts.append(attempt)
        if self.on_attempt is not None:
            self.on_attempt(attempt)
