"""Case assembly: DICOM has no end-of-study signal, so a RECEIVING case is decided by time.

* READY when every task of the model has at least one routed instance and nothing has
  arrived for ``quiet_seconds``.
* FAILED ``missing_task`` when ``max_wait_seconds`` have passed since its first instance,
  a task is still missing, and the study is quiet (a case is never failed while
  instances are still arriving).
* One image per task is chosen:

  - several series match one task (``multi_series``): ``latest`` = highest SeriesNumber,
    then the latest arrival; ``thinnest`` = smallest SliceThickness (a series without it
    counts as thickest), ties by ``latest``; ``refuse`` = FAILED ``ambiguous_series``.
  - a series with several images (``multi_image``): ``middle`` = the middle one by
    InstanceNumber (arrival order when absent; of an even count the upper middle),
    ``first``, ``last``, or ``refuse`` = FAILED ``multi_image_series``.

Instances whose series matched no route are kept and audited as ``unrouted``; they count
for the quiet period but are never inputs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from drifa_edge.serve.audit import AuditLog
from drifa_edge.serve.background import BackgroundLoop
from drifa_edge.serve.config import AssemblyConfig
from drifa_edge.serve.store import CaseRow, Instance, Store

log = logging.getLogger(__name__)


class Ambiguous(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def _latest_key(inst: Instance) -> tuple[int, float]:
    return (inst.series_number if inst.series_number is not None else -1, inst.received_at)


def choose_instance(instances: Sequence[Instance], multi_series: str, multi_image: str) -> Instance:
    """The one instance of a task among ``instances`` (all routed to it); see the module doc.

    Raises Ambiguous for the ``refuse`` rules."""
    series: dict[str, list[Instance]] = {}
    for inst in instances:
        series.setdefault(inst.series_uid or inst.sop_uid, []).append(inst)
    if len(series) > 1:
        if multi_series == "refuse":
            raise Ambiguous("ambiguous_series", f"{len(series)} series match this task")
        heads = {uid: max(items, key=_latest_key) for uid, items in series.items()}
        if multi_series == "thinnest":

            def key(uid: str) -> tuple[float, tuple[int, float]]:
                thick = heads[uid].slice_thickness
                return (-(thick if thick is not None else float("inf")), _latest_key(heads[uid]))
        else:

            def key(uid: str) -> tuple[int, float]:
                return _latest_key(heads[uid])

        chosen = series[max(series, key=key)]
    else:
        chosen = next(iter(series.values()))
    if len(chosen) == 1:
        return chosen[0]
    if multi_image == "refuse":
        raise Ambiguous(
            "multi_image_series", f"the series has {len(chosen)} images; one per task is expected"
        )
    ordered = sorted(
        chosen, key=lambda i: (i.instance_number if i.instance_number is not None else 0, i.received_at)
    )
    index = {"first": 0, "last": len(ordered) - 1, "middle": len(ordered) // 2}[multi_image]
    return ordered[index]


@dataclass(frozen=True)
class Decision:
    action: str  # wait | ready | fail
    inputs: dict[str, Instance] | None = None
    reason: str | None = None
    detail: str | None = None


def decide(
    case: CaseRow, instances: Sequence[Instance], tasks: Sequence[str], cfg: AssemblyConfig, now: float
) -> Decision:
    """What to do with one RECEIVING case at time ``now`` (seconds since the epoch)."""
    quiet = now - case.last_at >= cfg.quiet_seconds
    if not quiet:
        return Decision("wait")
    by_task = {t: [i for i in instances if i.task == t] for t in tasks}
    missing = [t for t, items in by_task.items() if not items]
    if missing:
        if now - case.created >= cfg.max_wait_seconds:
            return Decision(
                "fail", reason="missing_task", detail=f"no image for task(s) {', '.join(missing)}"
            )
        return Decision("wait")
    try:
        chosen = {
            t: choose_instance(items, cfg.multi_series, cfg.multi_image) for t, items in by_task.items()
        }
    except Ambiguous as a:
        return Decision("fail", reason=a.reason, detail=a.detail)
    return Decision("ready", inputs=chosen)


class Assembler(BackgroundLoop):
    """A thread that decides RECEIVING cases, woken by :meth:`poke` after each stored instance."""

    TICK_S = 0.25

    def __init__(
        self, store: Store, audit: AuditLog, cfg: AssemblyConfig, tasks: Sequence[str], on_ready=None
    ) -> None:
        self.store, self.audit, self.cfg, self.tasks = store, audit, cfg, tuple(tasks)
        self.on_ready = on_ready
        super().__init__("drifa-assembly")

    def poke(self, case_id: str | None = None) -> None:
        """Called after each stored instance; the periodic tick does the work."""

    def _run(self) -> None:
        # a tick, not every stored instance: nothing can become ready sooner than quiet_seconds
        while not self._stop.wait(min(self.TICK_S, self.cfg.quiet_seconds / 2)):
            try:
                self.step(time.time())
            except Exception:  # keep assembling; the next tick retries
                log.exception("assembly step failed")

    def step(self, now: float) -> int:
        """Decide every RECEIVING case that has been quiet for ``quiet_seconds`` (the others can
        only wait); returns how many became READY."""
        n_ready = 0
        for case in self.store.quiet_cases(now - self.cfg.quiet_seconds):
            decision = decide(case, self.store.instances_of(case.case_id), self.tasks, self.cfg, now)
            if decision.action == "ready":
                inputs = {t: i.path for t, i in decision.inputs.items()}
                if self.store.mark_ready(case.case_id, inputs, case.generation):
                    n_ready += 1
                    self.audit.write(
                        "case_ready", case_id=case.case_id, study_instance_uid=case.study_uid,
                        sop_instance_uids={t: i.sop_uid for t, i in decision.inputs.items()},
                        result_version_next=case.version + 1, waited_s=round(now - case.created, 3),
                    )  # fmt: skip
            elif decision.action == "fail":
                if self.store.mark_failed(case.case_id, decision.reason, ("RECEIVING",)):
                    self.audit.write(
                        "failed", case_id=case.case_id, study_instance_uid=case.study_uid, reason=decision.reason,
                        detail=decision.detail,
                    )  # fmt: skip
        if n_ready and self.on_ready is not None:
            self.on_ready()
        return n_ready
