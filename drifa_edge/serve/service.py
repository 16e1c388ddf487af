"""One ``drifa-edge serve`` process: the parts wired together, started in a safe order and
reconciled with the store at start-up.

Start-up order: model opened (a bad artifact fails before anything is created), folders,
pseudonym key, store, audit log -> recovery (INFERRING back to
READY; instance files on disk but not in the store ingested again; temporary files
removed) -> model loaded and warmed -> SR writer, outbox sender -> assembly and worker threads ->
DICOM receiver, watch folder, HTTP API (the ways in open last, once everything behind
them is ready). Stop is the reverse.

What is stored where (under ``storage.root``): ``store.sqlite`` (+ ``-wal``) the case
store; ``instances/<case_id>/`` received DICOM files; ``uploads/<case_id>/`` files of
HTTP and watch-folder cases; ``results/<case_id>/v<N>.json`` result records (and the SR
objects of the results module); ``audit.jsonl``; ``pseudonym.key``; ``ov-cache/``.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

from drifa_edge import __version__
from drifa_edge.runtimes.model_cache import resolve_cache_dir
from drifa_edge.serve.assembly import Assembler
from drifa_edge.serve.audit import AuditLog, load_or_create_key
from drifa_edge.serve.config import ServeConfig
from drifa_edge.serve.inference import open_predictor
from drifa_edge.serve.ingest import Ingestor
from drifa_edge.serve.metrics import Metrics
from drifa_edge.serve.store import Store
from drifa_edge.serve.worker import Worker

log = logging.getLogger(__name__)


class Service:
    def __init__(self, artifact: str | Path, cfg: ServeConfig) -> None:
        self.artifact = Path(artifact)
        self.cfg = cfg
        self.started_at: float | None = None
        self.receiver = self.http = self.watcher = self.retention = self.outbox = None
        self._results_hook = None
        self.assembler = self.worker = None
        self._stopped = threading.Event()

    # -------------------------------------------------------------- life cycle

    def start(self) -> Service:
        """Start every part (see the module doc for the order); a failure stops what had started."""
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> Service:
        cfg, root = self.cfg, self.cfg.root
        cache = resolve_cache_dir(cfg.inference.cache_dir or root / "ov-cache")  # "none": off
        self.predictor = open_predictor(
            self.artifact, cfg.inference, cache
        )  # a bad artifact: nothing made yet
        self._check_routes()
        for sub in ("instances", "uploads", "results"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        self.metrics = Metrics()
        self.key = load_or_create_key(Path(cfg.audit.pseudonym_key_file or root / "pseudonym.key"))
        self.store = Store(root / "store.sqlite")
        self.audit = AuditLog(Path(cfg.audit.path or root / "audit.jsonl"), self.predictor.model_sha256)
        self.ingestor = Ingestor(cfg, self.store, self.audit, self.key)
        self.ingestor.observe = self.metrics.observe_outcome
        self._recover()
        warm_s = self.predictor.warm_up()
        self.assembler = Assembler(self.store, self.audit, cfg.assembly, self.tasks, on_ready=self._on_ready)
        self.worker = Worker(
            self.store, self.audit, self.predictor, cfg.inference, root / "results", on_result=self._on_result
        )
        self.worker.on_batch = self.metrics.observe_batch
        self.ingestor.on_stored = self.assembler.poke
        self._start_results()  # before the worker: its first results (recovered cases) need the hook
        self.assembler.start()
        self.worker.start()
        if cfg.dicom.enabled:
            from drifa_edge.serve.receiver import Receiver

            self.receiver = Receiver(cfg.dicom, self.ingestor, self.audit)
            self.receiver.start()
        if cfg.watch.folder:
            from drifa_edge.serve.watch import Watcher

            self.watcher = Watcher(self, Path(cfg.watch.folder))
            self.watcher.start()
        if cfg.http.enabled:
            from drifa_edge.serve.http import HttpServer

            self.http = HttpServer(self)
            self.http.start()
        from drifa_edge.serve.retention import Retention

        self.retention = Retention(self.store, self.audit, cfg)
        self.retention.start()
        self.started_at = time.time()
        self.audit.write(
            "started", version=__version__, pid=os.getpid(), warm_s=round(warm_s, 3), **self.predictor.info,
            dicom_port=self.dicom_port, http_port=self.http_port,
        )  # fmt: skip
        return self

    def stop(self) -> None:
        # the ways in first, then what is behind them; the outbox last (the worker feeds it)
        for part in (
            self.http,
            self.watcher,
            self.receiver,
            self.retention,
            self.assembler,
            self.worker,
            self.outbox,
        ):
            if part is not None:
                part.stop()
        if getattr(self, "predictor", None) is not None:
            self.predictor.close()
        if getattr(self, "audit", None) is not None:
            self.audit.write("stopped", pid=os.getpid())
            self.audit.close()
        if getattr(self, "store", None) is not None:
            self.store.close()
        self._stopped.set()

    def run_forever(self) -> None:
        """Block until SIGTERM or SIGINT, then stop cleanly."""

        def _stop(signum, frame) -> None:
            self._stopped.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        while not self._stopped.wait(0.5):  # a timed wait lets the signal handler run promptly
            pass
        self._stopped.clear()
        self.stop()

    # -------------------------------------------------------------- parts

    @property
    def tasks(self) -> tuple[str, ...]:
        return self.predictor.tasks

    @property
    def dicom_port(self) -> int | None:
        return None if self.receiver is None else self.receiver.port

    @property
    def http_port(self) -> int | None:
        return None if self.http is None else self.http.port

    def _check_routes(self) -> None:
        from drifa_edge.errors import ConfigError, suggest

        for rule in self.cfg.assembly.routes:
            if rule.task not in self.tasks:
                raise ConfigError(
                    f"[[assembly.routes]] task {rule.task!r} is not a task of the model {list(self.tasks)}"
                    + suggest(rule.task, self.tasks)
                )
        if self.cfg.dicom.enabled and not self.cfg.assembly.routes:
            log.warning("no [[assembly.routes]]: received DICOM series cannot be mapped to tasks")

    def _recover(self) -> None:
        """Reconcile the disk with the store after a crash (see the module doc)."""
        for case_id in self.store.recover():
            self.audit.write("recovered", case_id=case_id, detail="was INFERRING at start-up; runs again")
        known = {i.path for c in self.store.cases() for i in self.store.instances_of(c.case_id)}
        for path in sorted((self.cfg.root / "instances").rglob("*")):
            if not path.is_file():
                continue
            if path.name.startswith(".") and path.name.endswith(".tmp"):
                path.unlink()  # an unfinished write: never acknowledged
            elif str(path) not in known:
                # written and fsynced but never recorded nor acknowledged: record it now (same name)
                data = path.read_bytes()
                outcome = self.ingestor.ingest(data, source="recovery")
                self.audit.write(
                    "recovered_instance", sop_instance_uid=outcome.sop_uid, outcome=outcome.event
                )

    def _on_ready(self) -> None:
        self.worker.poke()

    # -------------------------------------------------------------- results (SR + outbox)

    def _start_results(self) -> None:
        """SR writing, outbox and sender (``results_wiring``); reconciles DONE cases first."""
        from drifa_edge.serve.results_wiring import ResultsPipeline

        self.outbox = ResultsPipeline(self.cfg, self.store, self.audit, self.predictor.card)
        self.outbox.start()
        self._results_hook = self.outbox.on_result

    def _on_result(self, case_id: str, version: int, record: dict[str, Any]) -> None:
        if self._results_hook is not None:
            self._results_hook(case_id, version, record)

    def outbox_counts(self) -> dict[str, int]:
        return {} if self.outbox is None else self.outbox.counts()

    # -------------------------------------------------------------- status

    def readiness(self) -> dict[str, bool]:
        free_mb = shutil.disk_usage(self.cfg.root).free / 2**20
        try:
            self.store.counts()
            store_ok = os.access(self.store.path, os.W_OK)
        except Exception:
            store_ok = False
        return {
            "model_warm": bool(self.predictor.warm),
            "store_writable": store_ok,
            "disk_above_floor": free_mb >= self.cfg.storage.disk_floor_mb,
            "receiver_listening": self.receiver.listening
            if self.receiver is not None
            else not self.cfg.dicom.enabled,
            "worker_alive": self.worker.alive,
        }

    def status(self) -> dict[str, Any]:
        counts = self.store.counts()
        return {
            "version": __version__,
            "build_sha256": self.predictor.model_sha256,
            "model": self.predictor.info,
            "uptime_s": round(time.time() - (self.started_at or time.time()), 1),
            "cases": counts,
            "queues": {
                "assembling": counts["RECEIVING"],
                "ready": counts["READY"],
                "inferring": counts["INFERRING"],
                "sr_pending": 0 if self.outbox is None else self.outbox.pending(),
                "outbox": self.outbox_counts(),
            },
            "dicom": {"ae_title": self.cfg.dicom.ae_title, "port": self.dicom_port},
            "ready": self.readiness(),
        }
