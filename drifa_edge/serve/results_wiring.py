"""From a committed result to the PACS: the SR (``results.write_results``), the outbox
(``outbox.Outbox``, same SQLite file as the case store) and the sender thread
(``sender.Sender``), and the case states that follow from them.

* After the worker commits version N of a DICOM case, its SR (and the optional summary
  image) are written to ``results/<case_id>/`` with UIDs fixed by (study, case, N), and
  one outbox row per file and destination is enqueued (idempotent).
* The case goes SENT when every row of its latest version is sent, DEAD when one gave up
  (``serve-ctl retry`` puts DEAD rows back and the case back to DONE).
* At start-up every DONE case is passed through again: an SR or outbox row missing after a
  crash is made then; existing ones are left as they are (same UIDs, so never duplicated).
* HTTP and watch-folder sub-folder cases get an SR too when every input is a DICOM image
  of one study (``http.submit_files`` records their UIDs); with other inputs (PNG, JPEG...)
  there is no study to attach an SR to: they stay DONE with their JSON record, and the API
  says why (``http.sr_view``).
"""

from __future__ import annotations

import logging
import queue
import threading
from pathlib import Path
from typing import Any

from drifa_edge.artifact.card import ModelCard
from drifa_edge.serve.audit import AuditLog
from drifa_edge.serve.config import ServeConfig
from drifa_edge.serve.store import Store

log = logging.getLogger(__name__)


def open_outbox(cfg: ServeConfig):
    from drifa_edge.serve.outbox import BackoffPolicy, Outbox

    policy = BackoffPolicy(
        base_s=cfg.outbox.first_delay_s, factor=2.0, max_s=max(cfg.outbox.max_delay_s, cfg.outbox.first_delay_s),
        give_up_after_s=cfg.outbox.give_up_after_s,
    )  # fmt: skip
    return Outbox(cfg.root / "store.sqlite", policy)


class ResultsPipeline:
    """SR writing, outbox and sender thread of one service."""

    SEND_INTERVAL_S = 0.5

    def __init__(self, cfg: ServeConfig, store: Store, audit: AuditLog, card: ModelCard) -> None:
        from drifa_edge.serve.sender import Destination, Sender, SenderConfig

        self.cfg, self.store, self.audit, self.card = cfg, store, audit, card
        self.outbox = open_outbox(cfg)
        self.destinations = tuple(
            Destination(d.name, d.ae_title, d.host, d.port, verify=d.verify) for d in cfg.destinations
        )
        self.sender = None
        if self.destinations:
            sender_cfg = SenderConfig(self.destinations, calling_ae_title=cfg.dicom.ae_title)
            self.sender = Sender(self.outbox, sender_cfg, on_attempt=self._on_attempt)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._todo: queue.Queue[tuple[str, int, dict[str, Any]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="drifa-sender", daemon=True)
        # SRs are built in their own thread: highdicom holds the GIL while the worker's runtime
        # releases it, so the next batch is inferred while the previous SRs are written
        self._builder = threading.Thread(target=self._build_loop, name="drifa-sr", daemon=True)

    def start(self) -> None:
        self.reconcile()
        self._builder.start()
        if self.sender is not None:
            self._thread.start()

    def stop(self) -> None:
        self._todo.put(None)  # after what is queued: a clean stop writes every pending SR
        if self._builder.is_alive():
            self._builder.join(timeout=60)
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        self.outbox.close()

    def pending(self) -> int:
        """Results committed whose SR is not written yet."""
        return self._todo.qsize()

    def _build_loop(self) -> None:
        while True:
            item = self._todo.get()
            if item is None:
                return
            try:
                self.write_and_enqueue(*item)
            except Exception:  # reconcile() at the next start-up makes it again
                log.exception("results of %s v%d", item[0], item[1])

    def counts(self) -> dict[str, int]:
        return self.outbox.counts()

    # -------------------------------------------------------------- results

    def on_result(self, case_id: str, version: int, record: dict[str, Any]) -> None:
        """Queue one committed version for its SR (the worker's hook; returns at once)."""
        self._todo.put((case_id, version, record))

    def write_and_enqueue(self, case_id: str, version: int, record: dict[str, Any]) -> None:
        """Write the SR of one committed version and enqueue it (both idempotent). An SR that
        cannot be built leaves the JSON record and turns the case FAILED ``sr_failed: ...``."""
        if record.get("status") != "ok" or not record.get("dicom"):
            return
        try:
            files = self._write_sr(case_id, version, record)
        except Exception as e:  # the JSON record stays; the case says why it has no SR
            log.exception("SR of %s v%d", case_id, version)
            reason = f"sr_failed: {type(e).__name__}: {e}"
            self.store.set_state(case_id, "FAILED", reason, ("DONE",))
            self.audit.write(
                "failed", case_id=case_id, result_version=version, reason="sr_failed", detail=reason
            )
            return
        if self.destinations:
            for path in files.paths:
                self.outbox.enqueue(case_id, version, path, [d.name for d in self.destinations])
            self._wake.set()

    def _write_sr(self, case_id: str, version: int, record: dict[str, Any]):
        import pydicom

        from drifa_edge.serve.results import write_results

        uids = record["dicom"]["sop_instance_uids"]
        from drifa_edge.serve.worker import sop_instance_uid

        by_uid = {sop_instance_uid(i): i for i in self.store.instances_of(case_id)}
        sources = {t: pydicom.dcmread(by_uid[uid].path, stop_before_pixels=True) for t, uid in uids.items()}
        out = self.cfg.root / "results" / case_id
        files = write_results(
            out, record, sources, self.card, version, summary_image=self.cfg.results.secondary_capture
        )
        self.audit.write(
            "sr_written", case_id=case_id, result_version=version, sr_sop_instance_uid=files.uids.sr_instance,
            sr_series_instance_uid=files.uids.sr_series, study_instance_uid=record["dicom"]["study_instance_uid"],
        )  # fmt: skip
        return files

    def reconcile(self) -> None:
        """Pass every DONE case's latest version through :meth:`write_and_enqueue` again (after a crash)."""
        for case in self.store.cases(("DONE",)):
            record = self.store.result(case.case_id)
            if record is None:
                continue
            if self.destinations and self.outbox.case_state(case.case_id, case.version) is not None:
                self._update_case(case.case_id, case.version)
                continue
            if (
                not self.destinations
                and (self.cfg.root / "results" / case.case_id / f"sr-v{case.version}.dcm").is_file()
            ):
                continue
            try:
                self.write_and_enqueue(case.case_id, case.version, record)
            except Exception:
                log.exception("reconciling %s v%d", case.case_id, case.version)

    # -------------------------------------------------------------- sending

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.SEND_INTERVAL_S)
            self._wake.clear()
            try:
                self.sender.run_once()
            except Exception:
                log.exception("sender run failed")

    def _on_attempt(self, attempt: Any) -> None:
        item = attempt.item
        event = {"SENT": "sent"}.get(item.state, "dead" if item.state == "DEAD" else "send_failed")
        self.audit.write(
            event, case_id=item.case_id, result_version=item.result_version, destination=item.destination,
            sop_instance_uid=item.sop_instance_uid, status=None if attempt.status is None else f"0x{attempt.status:04X}",
            reason=attempt.reason, attempts=item.attempts, ms=round(attempt.seconds * 1e3, 1),
            **({"verify": attempt.verify} if attempt.verify else {}),
        )  # fmt: skip
        self._update_case(item.case_id, item.result_version)

    def _update_case(self, case_id: str, version: int) -> None:
        case = self.store.get_case(case_id)
        if case is None or case.version != version:
            return  # an older version: the case follows its latest one
        state = self.outbox.case_state(case_id, version)
        if state == "SENT":
            if self.store.set_state(case_id, "SENT", None, ("DONE", "DEAD")):
                self.audit.write("case_sent", case_id=case_id, result_version=version)
        elif state == "DEAD":
            if self.store.set_state(case_id, "DEAD", "send_gave_up", ("DONE",)):
                self.audit.write("dead", case_id=case_id, result_version=version, reason="send_gave_up")


# ------------------------------------------------------------------ serve-ctl


def outbox_items(cfg: ServeConfig, store: Store) -> list[dict[str, Any]]:
    """Every outbox row as a dict (``serve-ctl outbox``)."""
    from dataclasses import asdict

    outbox = open_outbox(cfg)
    try:
        return [
            {k: str(v) if isinstance(v, Path) else v for k, v in asdict(i).items()} for i in outbox.list()
        ]
    finally:
        outbox.close()


def retry_dead(cfg: ServeConfig, store: Store, case_ids: list[str] | None = None) -> int:
    """DEAD rows (of ``case_ids``, or all) back to PENDING, their cases DEAD -> DONE; a running
    service sends them at its next pass. Returns the number of rows."""
    outbox = open_outbox(cfg)
    try:
        dead = [i for i in outbox.list(state="DEAD") if case_ids is None or i.case_id in case_ids]
        n = outbox.retry([i.id for i in dead]) if dead else 0
        for case_id in {i.case_id for i in dead}:
            store.set_state(case_id, "DONE", None, ("DEAD",))
        return n
    finally:
        outbox.close()
