"""Retention: received images, uploads and results are deleted, oldest first, once a case is
older than ``max_age_hours``, while everything kept exceeds ``max_gb``, or while the free
space is below twice ``storage.disk_floor_mb`` (reason ``disk_low``), so the floor (where
instances are refused) is not reached in normal operation. Never a case in flight: only SENT and FAILED cases,
and DONE ones when no destination is configured (with destinations, DONE still has
results to deliver; DEAD waits for ``serve-ctl retry``). Each deletion is audited.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from drifa_edge.serve.audit import AuditLog
from drifa_edge.serve.background import BackgroundLoop
from drifa_edge.serve.config import ServeConfig
from drifa_edge.serve.store import Store

log = logging.getLogger(__name__)
FOLDERS = ("instances", "uploads", "results")


def _size(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class Retention(BackgroundLoop):
    def __init__(self, store: Store, audit: AuditLog, cfg: ServeConfig) -> None:
        self.store, self.audit, self.cfg = store, audit, cfg
        super().__init__("drifa-retention")

    def _run(self) -> None:
        while not self._stop.wait(self.cfg.retention.interval_s):
            try:
                self.sweep(time.time())
            except Exception:
                log.exception("retention sweep failed")

    def deletable_states(self) -> tuple[str, ...]:
        return ("SENT", "FAILED") if self.cfg.destinations else ("SENT", "FAILED", "DONE")

    def sweep(self, now: float) -> list[str]:
        """Delete what the limits require; returns the deleted case ids (oldest first)."""
        root = self.cfg.root
        sizes = {c.case_id: sum(_size(root / f / c.case_id) for f in FOLDERS) for c in self.store.cases()}
        total = sum(sizes.values())
        limit = self.cfg.retention.max_gb * 2**30
        max_age = self.cfg.retention.max_age_hours * 3600
        floor = self.cfg.storage.disk_floor_mb * 2**20
        deleted = []
        for case in sorted(self.store.cases(self.deletable_states()), key=lambda c: c.updated):
            age = now - case.updated
            low = shutil.disk_usage(root).free < 2 * floor
            reason = (
                "max_age" if age > max_age else "max_size" if total > limit else "disk_low" if low else None
            )
            if reason is None:
                continue
            if not self.store.delete_case(case.case_id):  # went back in flight meanwhile
                continue
            for folder in FOLDERS:
                shutil.rmtree(root / folder / case.case_id, ignore_errors=True)
            total -= sizes.get(case.case_id, 0)
            deleted.append(case.case_id)
            self.audit.write(
                "deleted", case_id=case.case_id, reason=reason, state=case.state, bytes=sizes.get(case.case_id, 0),
                age_h=round(age / 3600, 3),
            )  # fmt: skip
        return deleted
