"""The inference worker: its own thread, so receiving never waits for the model.

Micro-batching: when a case becomes READY the worker waits up to ``batch_wait_ms`` for
more, then claims up to ``batch_size`` READY cases (READY -> INFERRING in one
transaction) and runs them as one engine call. Each result is written as JSON
(``results/<case_id>/v<version>.json``, atomically) and committed with the case's new
state in one transaction; then ``on_result`` (SR + outbox) runs. A crash before the
commit leaves the case INFERRING, which start-up turns back into READY: the case is run
again and no version is skipped or duplicated.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from drifa_edge.artifact.atomic import atomic_write
from drifa_edge.inference.manifest import Case
from drifa_edge.serve.audit import AuditLog
from drifa_edge.serve.background import BackgroundLoop
from drifa_edge.serve.config import InferenceConfig
from drifa_edge.serve.crash import crash_point
from drifa_edge.serve.inference import CasePredictor
from drifa_edge.serve.store import CaseRow, Instance, Store

log = logging.getLogger(__name__)

ResultHook = Callable[[str, int, dict[str, Any]], None]


def dicom_uids(store: Store, case: CaseRow) -> dict[str, Any] | None:
    """The DICOM UIDs of a case's chosen inputs (None for a case that came without DICOM)."""
    by_path = {i.path: i for i in store.instances_of(case.case_id)}
    chosen = {t: by_path.get(p) for t, p in (case.inputs or {}).items()}
    if not chosen or any(i is None or i.study_uid is None for i in chosen.values()):
        return None
    uploaded = any(":" in i.sop_uid for i in chosen.values())
    if uploaded and len({i.study_uid for i in chosen.values()}) > 1:
        return None  # uploaded DICOM files of several studies: no one study for an SR
    return {
        "study_instance_uid": next(iter(chosen.values())).study_uid,
        "series_instance_uids": {t: i.series_uid for t, i in chosen.items()},
        "sop_instance_uids": {t: sop_instance_uid(i) for t, i in chosen.items()},
        "sop_class_uids": {t: i.sop_class for t, i in chosen.items()},
    }


def sop_instance_uid(inst: Instance) -> str:
    """The SOP Instance UID of a stored input. Uploaded DICOM files (HTTP, watch sub-folder) are
    keyed ``<source>:<case>:<task>:<digest>`` in the store (a UID never holds ':'); their UID is
    read from the file."""
    if ":" not in inst.sop_uid:
        return inst.sop_uid
    import pydicom

    return str(
        pydicom.dcmread(inst.path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"]).SOPInstanceUID
    )


class Worker(BackgroundLoop):
    TICK_S = 0.2

    def __init__(
        self, store: Store, audit: AuditLog, predictor: CasePredictor, cfg: InferenceConfig, results_dir: Path,
        on_result: ResultHook | None = None,
    ) -> None:  # fmt: skip
        self.store, self.audit, self.predictor, self.cfg = store, audit, predictor, cfg
        self.results_dir = Path(results_dir)
        self.on_result = on_result
        self.on_batch: Callable[[float, list[dict[str, Any]]], None] | None = None  # metrics
        self._wake_event = threading.Event()
        super().__init__("drifa-worker")
        self.batches = 0
        self.inferred = 0
        self.last_batch_s: float | None = None

    JOIN_TIMEOUT_S = 60.0  # a batch in flight finishes before the store closes

    def _wake(self) -> None:
        self._wake_event.set()

    def poke(self) -> None:
        self._wake_event.set()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake_event.wait(self.TICK_S)
            self._wake_event.clear()
            try:
                while not self._stop.is_set() and self.step():
                    pass
            except Exception:
                log.exception("inference worker step failed")

    def step(self) -> int:
        """Run one micro-batch if any case is READY; returns the number of cases run."""
        ready = self.store.counts()["READY"]
        if not ready:
            return 0
        if ready < self.cfg.batch_size and self.cfg.batch_wait_ms > 0:
            time.sleep(self.cfg.batch_wait_ms / 1e3)  # let a few more arrive: one engine call for them all
        claimed = self.store.claim_ready(self.cfg.batch_size)
        if not claimed:
            return 0
        crash_point("during_inference")
        t0 = time.perf_counter()
        cases = [Case(c.case_id, {t: Path(p) for t, p in (c.inputs or {}).items()}) for c in claimed]
        try:
            records = self.predictor.predict(cases)
        except Exception as e:  # the predictor isolates bad cases; this is the runtime itself failing
            log.exception("inference failed for %d case(s)", len(claimed))
            for c in claimed:
                if self.store.mark_failed(
                    c.case_id, f"inference_error: {type(e).__name__}: {e}", ("INFERRING",)
                ):
                    self.audit.write("failed", case_id=c.case_id, reason="inference_error", detail=str(e))
            return len(claimed)
        seconds = time.perf_counter() - t0
        self.batches += 1
        self.last_batch_s = seconds
        if self.on_batch is not None:  # before the cases show DONE, so metrics never lag the states
            self.on_batch(seconds, records)
        for case, record in zip(claimed, records, strict=True):
            self._finish(case, record, seconds, len(claimed))
        return len(claimed)

    def _finish(self, case: CaseRow, record: dict[str, Any], seconds: float, batch: int) -> None:
        version = case.version + 1  # one worker: nobody else commits a version of this case meanwhile
        record = {
            **record,
            "result_version": version,
            "source": case.source,
            "dicom": dicom_uids(self.store, case),
            "timing": {
                "last_input_at": case.last_at,
                "inferred_at": time.time(),
                "inference_batch_s": round(seconds, 4),
                "batch_size": batch,
            },
        }
        path = self.results_dir / case.case_id / f"v{version}.json"
        atomic_write(path, (json.dumps(record, indent=1, sort_keys=True) + "\n").encode())
        committed, state = self.store.finish(
            case.case_id, case.ready_generation or case.generation, record, str(path)
        )
        self.inferred += 1
        tasks = record.get("tasks") or {}
        self.audit.write(
            "inferred" if record["status"] == "ok" else "failed", case_id=case.case_id, result_version=committed,
            state=state, reason=None if record["status"] == "ok" else "bad_input", detail=record.get("error"),
            study_instance_uid=(record["dicom"] or {}).get("study_instance_uid"),
            predicted={t: r.get("predicted") for t, r in tasks.items()}, refer={t: r.get("refer") for t, r in tasks.items()},
            runtime=record.get("runtime"), precision=record.get("precision"), samples=record.get("samples"),
            latency_s=round(time.time() - case.last_at, 3), batch_size=batch,
        )  # fmt: skip
        crash_point("after_result_commit")
        if record["status"] == "ok" and self.on_result is not None:
            try:
                self.on_result(case.case_id, committed, record)
            except Exception:  # the result is committed; start-up reconciliation makes the SR again
                log.exception("result hook failed for %s v%d", case.case_id, committed)
