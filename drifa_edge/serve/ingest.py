"""Taking one DICOM instance in: the checks, the atomic write and the store record, shared
by the C-STORE handler and the watch folder. Nothing is acknowledged before this returns
``STORED``/``DUPLICATE``: the file is written to a temporary name, fsynced, renamed and the
folder fsynced, then the store transaction commits.

Refusals (C-STORE status, audit ``rejected`` with ``reason``):

=======================  ======  ===========================================================
reason                   status  meaning
=======================  ======  ===========================================================
disk_floor               0xA700  free space below ``storage.disk_floor_mb``
size_limit               0xA700  the encoded instance exceeds ``dicom.max_instance_mb``
not_image                0x0122  the SOP class is not an image storage class (SR, PDF, ...)
unreadable               0xC210  the data set cannot be decoded (truncated, not DICOM)
missing_uid              0xA900  no SOP/Study/Series Instance UID
missing_pixel_data       0xA900  an image SOP class without Pixel Data
undecodable_pixels       0xA900  Pixel Data that cannot be decoded (truncated, unknown codec)
uid_conflict             0xC001  this SOP Instance UID was stored before with other pixels
=======================  ======  ===========================================================

A second delivery of the same SOP Instance UID with the same pixels is a success that
changes nothing (audit ``duplicate``): senders retry after a lost acknowledgement.
"Same content" means the same decoded pixel array (so a re-send in another transfer
syntax is still a duplicate); header-only changes are ignored, not merged.
"""

from __future__ import annotations

import hashlib
import io
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drifa_edge.artifact.atomic import atomic_write
from drifa_edge.serve.audit import AuditLog, pseudonym
from drifa_edge.serve.config import RouteRule, ServeConfig
from drifa_edge.serve.crash import crash_point
from drifa_edge.serve.store import Instance, Store

log = logging.getLogger(__name__)

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
SOP_CLASS_NOT_SUPPORTED = 0x0122
CANNOT_UNDERSTAND = 0xC210
DOES_NOT_MATCH = 0xA900
UID_CONFLICT = 0xC001

STATUS_OF = {
    "disk_floor": OUT_OF_RESOURCES,
    "size_limit": OUT_OF_RESOURCES,
    "not_image": SOP_CLASS_NOT_SUPPORTED,
    "unreadable": CANNOT_UNDERSTAND,
    "missing_uid": DOES_NOT_MATCH,
    "missing_pixel_data": DOES_NOT_MATCH,
    "undecodable_pixels": DOES_NOT_MATCH,
    "uid_conflict": UID_CONFLICT,
}


@dataclass(frozen=True)
class Outcome:
    """What happened to one instance: ``status`` is the C-STORE status to answer."""

    status: int
    event: str  # stored | duplicate | late | late_ignored | rejected
    reason: str | None = None
    case_id: str | None = None
    sop_uid: str | None = None

    @property
    def accepted(self) -> bool:
        return self.status == SUCCESS


class Refused(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def is_image_sop_class(uid: str) -> bool:
    """True for image storage SOP classes (by their registered name: "... Image Storage")."""
    from pydicom.uid import UID

    return "Image Storage" in UID(str(uid)).name


def _tag_str(ds: Any, name: str) -> str:
    value = ds.get(name, "")
    return "" if value is None else str(value)


def _int(ds: Any, name: str) -> int | None:
    try:
        value = ds.get(name)
        return None if value in (None, "") else int(value)
    except (TypeError, ValueError):
        return None


def _float(ds: Any, name: str) -> float | None:
    try:
        value = ds.get(name)
        return None if value in (None, "") else float(value)
    except (TypeError, ValueError):
        return None


def route_task(routes: Sequence[RouteRule], ds: Any) -> str | None:
    """The task of ``ds``'s series by the first rule of ``routes`` that matches, or None
    (unrouted); shared with the case index of an archive (:mod:`drifa_edge.serve.case_index`)."""
    tags = {
        "modality": _tag_str(ds, "Modality"),
        "body_part": _tag_str(ds, "BodyPartExamined"),
        "series_description": _tag_str(ds, "SeriesDescription"),
        "photometric": _tag_str(ds, "PhotometricInterpretation"),
        "sop_class": _tag_str(ds, "SOPClassUID"),
    }
    for rule in routes:
        if rule.matches(tags):
            return rule.task
    return None


def group_key(by: str, ds: Any, key: bytes | None) -> str:
    """What groups instances into one case (``assembly.group_by``); ``patient_date`` needs the
    pseudonym ``key`` (the PatientID never appears in clear)."""
    if by == "series":
        return "series:" + _tag_str(ds, "SeriesInstanceUID")
    if by == "patient_date":
        if key is None:
            from drifa_edge.errors import ConfigError

            raise ConfigError(
                "[assembly] group_by = 'patient_date' needs the service's pseudonym key; use 'study' or 'series'"
            )
        return f"patient:{pseudonym(key, _tag_str(ds, 'PatientID')) or '-'}:{_tag_str(ds, 'StudyDate')}"
    return "study:" + _tag_str(ds, "StudyInstanceUID")


def case_id_of_group(key: str) -> str:
    """A stable case id for a group key (a hash: the key may hold a pseudonym)."""
    return "dcm-" + hashlib.sha256(key.encode()).hexdigest()[:16]


class Ingestor:
    """Checks, writes and records instances; calls ``on_stored(case_id)`` after each commit."""

    def __init__(
        self,
        cfg: ServeConfig,
        store: Store,
        audit: AuditLog,
        key: bytes,
        on_stored: Callable[[str], None] | None = None,
    ) -> None:
        self.cfg, self.store, self.audit, self.key = cfg, store, audit, key
        self.on_stored = on_stored
        self.observe: Callable[[Outcome, float], None] | None = None  # metrics
        self.instances_dir = cfg.root / "instances"

    # -------------------------------------------------------------- checks

    def check_disk(self) -> None:
        free_mb = shutil.disk_usage(self.cfg.root).free / 2**20
        if free_mb < self.cfg.storage.disk_floor_mb:
            raise Refused(
                "disk_floor", f"{free_mb:.0f} MB free, floor {self.cfg.storage.disk_floor_mb:.0f} MB"
            )

    def check_size(self, n_bytes: int) -> None:
        limit = self.cfg.dicom.max_instance_mb * 2**20
        if n_bytes > limit:
            raise Refused("size_limit", f"{n_bytes} bytes > {self.cfg.dicom.max_instance_mb} MB")

    def route(self, ds: Any) -> str | None:
        """The task of this instance's series by the first matching rule, or None (unrouted)."""
        return route_task(self.cfg.assembly.routes, ds)

    def group_key(self, ds: Any) -> str:
        return group_key(self.cfg.assembly.group_by, ds, self.key)

    def case_id_of(self, ds: Any) -> str:
        """A stable case id for the instance's group (a hash: the key may hold a pseudonym)."""
        return case_id_of_group(self.group_key(ds))

    @staticmethod
    def parse(encoded: bytes) -> Any:
        import pydicom

        try:
            return pydicom.dcmread(io.BytesIO(encoded), force=True)
        except Exception as e:  # pydicom raises many types on damaged input
            raise Refused("unreadable", f"{type(e).__name__}: {e}") from e

    @staticmethod
    def content_hash(ds: Any) -> str:
        """sha256 of the decoded pixel array (shape, dtype, bytes); Refused when it cannot be decoded."""
        if "PixelData" not in ds:
            raise Refused("missing_pixel_data", "no Pixel Data (7FE0,0010) in an image SOP class")
        try:
            pixels = ds.pixel_array
        except Exception as e:
            raise Refused("undecodable_pixels", f"{type(e).__name__}: {e}") from e
        h = hashlib.sha256(f"{pixels.shape}|{pixels.dtype.str}|".encode())
        h.update(pixels.tobytes())
        return h.hexdigest()

    # -------------------------------------------------------------- the path in

    def ingest(
        self, encoded: bytes, ds: Any = None, calling_ae: str | None = None, source: str = "dicom"
    ) -> Outcome:
        """Check, write and record one instance (``encoded``: a DICOM Part 10 file's bytes).

        ``ds`` may be given already decoded (the C-STORE handler); it is parsed from
        ``encoded`` otherwise. Never raises for a bad instance: the outcome says why."""
        t0 = time.perf_counter()
        outcome = self._ingest(encoded, ds, calling_ae, source, t0)
        if self.observe is not None:
            self.observe(outcome, time.perf_counter() - t0)
        return outcome

    def _ingest(self, encoded: bytes, ds: Any, calling_ae: str | None, source: str, t0: float) -> Outcome:
        sop_uid = None
        try:
            self.check_disk()
            self.check_size(len(encoded))
            if ds is None:
                ds = self.parse(encoded)
            sop_class = _tag_str(ds, "SOPClassUID")
            sop_uid = _tag_str(ds, "SOPInstanceUID") or None
            if not sop_class or not is_image_sop_class(sop_class):
                raise Refused("not_image", f"SOP class {sop_class or '(none)'} is not an image storage class")
            missing = [
                n for n in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID") if not _tag_str(ds, n)
            ]
            if missing:
                raise Refused("missing_uid", f"no {', '.join(missing)}")
            content = self.content_hash(ds)
            return self._store(encoded, ds, content, calling_ae, source, t0)
        except Refused as r:
            self.audit.write(
                "rejected", reason=r.reason, detail=r.detail, sop_instance_uid=sop_uid, calling_ae=calling_ae,
                source=source, status=f"0x{STATUS_OF[r.reason]:04X}",
            )  # fmt: skip
            return Outcome(STATUS_OF[r.reason], "rejected", r.reason, sop_uid=sop_uid)

    def _store(
        self, encoded: bytes, ds: Any, content: str, calling_ae: str | None, source: str, t0: float
    ) -> Outcome:
        sop_uid = _tag_str(ds, "SOPInstanceUID")
        old = self.store.find_instance(sop_uid)
        if old is not None:
            return self._repeat(old, content, calling_ae, source)
        case_id = self.case_id_of(ds)
        path = self.instances_dir / case_id / f"{sop_uid}.{content[:12]}.dcm"
        atomic_write(path, encoded)
        crash_point("after_instance_fsync")
        patient = pseudonym(self.key, _tag_str(ds, "PatientID"))
        inst = Instance(
            sop_uid=sop_uid, case_id=case_id, content_sha256=content, path=str(path), bytes=len(encoded),
            study_uid=_tag_str(ds, "StudyInstanceUID"), series_uid=_tag_str(ds, "SeriesInstanceUID"),
            sop_class=_tag_str(ds, "SOPClassUID"), task=self.route(ds), series_number=_int(ds, "SeriesNumber"),
            instance_number=_int(ds, "InstanceNumber"), slice_thickness=_float(ds, "SliceThickness"),
            calling_ae=calling_ae, received_at=time.time(),
        )  # fmt: skip
        outcome, case = self.store.add_instance(
            inst, source, patient, rerun_late=self.cfg.assembly.late_instance == "rerun"
        )
        crash_point("after_store_commit")
        if outcome in ("duplicate", "conflict"):  # a concurrent delivery won the race
            if Path(self.store.find_instance(sop_uid).path) != path:
                path.unlink(missing_ok=True)
            return self._repeat(self.store.find_instance(sop_uid), content, calling_ae, source)
        self.audit.write(
            "received" if outcome == "stored" else outcome, case_id=case_id, sop_instance_uid=sop_uid,
            study_instance_uid=inst.study_uid, series_instance_uid=inst.series_uid, task=inst.task or "unrouted",
            patient=patient, calling_ae=calling_ae, source=source, bytes=len(encoded), case_state=case.state,
            result_version_next=case.version + 1 if outcome == "late" else None,
            ms=round((time.perf_counter() - t0) * 1e3, 2),
        )  # fmt: skip
        if self.on_stored is not None:
            self.on_stored(case_id)
        return Outcome(SUCCESS, outcome, case_id=case_id, sop_uid=sop_uid)

    def _repeat(self, old: Instance, content: str, calling_ae: str | None, source: str) -> Outcome:
        if old.content_sha256 == content:
            self.audit.write(
                "duplicate",
                case_id=old.case_id,
                sop_instance_uid=old.sop_uid,
                calling_ae=calling_ae,
                source=source,
            )
            return Outcome(SUCCESS, "duplicate", case_id=old.case_id, sop_uid=old.sop_uid)
        self.audit.write(
            "rejected", reason="uid_conflict", case_id=old.case_id, sop_instance_uid=old.sop_uid, calling_ae=calling_ae,
            source=source, status=f"0x{UID_CONFLICT:04X}",
            detail="this SOP Instance UID was stored before with different pixel data; the first is kept",
        )  # fmt: skip
        return Outcome(UID_CONFLICT, "rejected", "uid_conflict", case_id=old.case_id, sop_uid=old.sop_uid)
