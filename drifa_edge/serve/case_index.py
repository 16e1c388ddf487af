"""A case index from DICOM headers: an archive folder scored without a hand-written manifest.

``drifa-edge serve`` turns instances into cases as they arrive; an archive has them all on
disk already. :func:`index_dicom_folder` reads every file's header (no pixels) and applies
the service's own rules, from the same ``[assembly]`` table of a serve config:

- each instance's series goes to a task by the first matching ``[[assembly.routes]]`` rule
  (``ingest.route_task``, the function the service routes with);
- instances are grouped into cases by ``group_by`` (study or series) and get the case id
  the service would give them (``dcm-`` + a hash of the study or series UID), so a record
  from ``score`` and one from ``serve`` for the same study share the id;
- one instance per task is chosen by ``multi_series`` and ``multi_image``
  (``assembly.choose_instance``); the file's modification time stands in for the
  arrival time in the ``latest`` tie-break.

A group with a routed instance for some tasks but not others becomes a case whose missing
tasks are empty, so ``predict``/``score`` write it as an error record (``missing modality``),
as for an empty manifest cell: the study is reported, not dropped. A group that the
``refuse`` rules make ambiguous is listed in :attr:`CaseIndex.unresolved` with the reason
the service would give (``ambiguous_series``, ``multi_image_series``). Files that cannot
be cases (not DICOM, not an image storage class, no UIDs, a series no rule routes) are
counted in :attr:`CaseIndex.skipped` by reason. ``group_by = "patient_date"`` needs the
service's pseudonym key and is refused here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from drifa_edge.errors import ConfigError, MissingDependencyError
from drifa_edge.inference.manifest import Case
from drifa_edge.serve.assembly import Ambiguous, choose_instance
from drifa_edge.serve.config import AssemblyConfig
from drifa_edge.serve.ingest import (
    _float,
    _int,
    _tag_str,
    case_id_of_group,
    group_key,
    is_image_sop_class,
    route_task,
)
from drifa_edge.serve.store import Instance

log = logging.getLogger(__name__)

HEADER_TAGS = (
    "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Modality",
    "BodyPartExamined", "SeriesDescription", "PhotometricInterpretation", "SeriesNumber",
    "InstanceNumber", "SliceThickness",
)  # fmt: skip


@dataclass(frozen=True)
class Unresolved:
    """A group the ``refuse`` rules leave without a case; ``reason`` as the service says it."""

    case_id: str
    group: str  # "study:<uid>" or "series:<uid>"
    reason: str
    detail: str


@dataclass
class CaseIndex:
    """Cases of an archive folder (in the order their first file sorts), what could not
    become a case, and the files left out (reason -> paths)."""

    cases: list[Case]
    groups: dict[str, str] = field(default_factory=dict)  # case_id -> "study:<uid>" / "series:<uid>"
    unresolved: list[Unresolved] = field(default_factory=list)
    skipped: dict[str, list[Path]] = field(default_factory=dict)
    files: int = 0

    def summary(self) -> str:
        left = ", ".join(f"{len(paths)} {reason}" for reason, paths in sorted(self.skipped.items()))
        incomplete = sum(1 for c in self.cases if any(p is None for p in c.inputs.values()))
        return (
            f"{self.files} file(s) -> {len(self.cases)} case(s)"
            + (f" ({incomplete} with a task missing)" if incomplete else "")
            + (f", {len(self.unresolved)} unresolved" if self.unresolved else "")
            + (f"; files left out: {left}" if left else "")
        )


def _read_header(path: Path):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(HEADER_TAGS))
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError) as e:
        log.debug("%s: not read as DICOM (%s)", path, e)
        return None


def _instance(path: Path, ds, task: str, case_id: str) -> Instance:
    return Instance(
        sop_uid=_tag_str(ds, "SOPInstanceUID"), case_id=case_id, content_sha256="", path=str(path),
        bytes=path.stat().st_size, study_uid=_tag_str(ds, "StudyInstanceUID"),
        series_uid=_tag_str(ds, "SeriesInstanceUID"), sop_class=_tag_str(ds, "SOPClassUID"), task=task,
        series_number=_int(ds, "SeriesNumber"), instance_number=_int(ds, "InstanceNumber"),
        slice_thickness=_float(ds, "SliceThickness"), received_at=os.stat(path).st_mtime,
    )  # fmt: skip


def index_dicom_folder(folder: str | Path, tasks: Sequence[str], assembly: AssemblyConfig) -> CaseIndex:
    """Cases (one file per task of ``tasks``) of every DICOM file under ``folder`` (recursive),
    by the routing, grouping and selection rules of ``assembly``; see the module doc.

    Raises ConfigError for a folder that does not exist, no routes, a route to a task the
    model lacks, or ``group_by = "patient_date"``; MissingDependencyError without pydicom."""
    from drifa_edge.errors import suggest

    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"--dicom {folder}: not a folder; give the archive folder holding the DICOM files")
    if not assembly.routes:
        raise ConfigError(
            "no [[assembly.routes]] in the config: the index cannot tell which series goes to which "
            "task; add rules as for drifa-edge serve (see drifa-edge serve-ctl example-config)"
        )
    for rule in assembly.routes:
        if rule.task not in tasks:
            raise ConfigError(
                f"[[assembly.routes]] task {rule.task!r} is not a task of the model {list(tasks)}"
                + suggest(rule.task, tasks)
            )
    if assembly.group_by == "patient_date":
        raise ConfigError(
            "[assembly] group_by = 'patient_date' groups by a pseudonym of the PatientID made with the "
            "service's key; index the archive by 'study' or 'series' instead"
        )
    try:
        import pydicom  # noqa: F401
    except ImportError as e:
        raise MissingDependencyError(
            "the DICOM case index needs pydicom: pip install 'drifa-edge[dicom]'"
        ) from e

    index = CaseIndex(cases=[])
    routed: dict[str, list[Instance]] = {}  # case_id -> routed instances, in file order
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        index.files += 1
        reason, ds = _classify(path)
        task = None if reason else route_task(assembly.routes, ds)
        if reason is None and task is None:
            reason = "unrouted"
        if reason is not None:
            index.skipped.setdefault(reason, []).append(path)
            continue
        key = group_key(assembly.group_by, ds, None)
        case_id = case_id_of_group(key)
        index.groups.setdefault(case_id, key)
        routed.setdefault(case_id, []).append(_instance(path, ds, task, case_id))
    for case_id, instances in routed.items():
        inputs: dict[str, Path | None] = {}
        try:
            for task in tasks:
                mine = [i for i in instances if i.task == task]
                inputs[task] = (
                    Path(choose_instance(mine, assembly.multi_series, assembly.multi_image).path)
                    if mine
                    else None
                )
        except Ambiguous as a:
            index.unresolved.append(Unresolved(case_id, index.groups[case_id], a.reason, a.detail))
            continue
        index.cases.append(Case(case_id, inputs))
    return index


def _classify(path: Path):
    """(None, header) for an image instance with its UIDs, else (reason, None)."""
    ds = _read_header(path)
    if ds is None:
        return "not_dicom", None
    sop_class = _tag_str(ds, "SOPClassUID")
    if not sop_class or not is_image_sop_class(sop_class):
        return "not_image", None
    if not all(_tag_str(ds, n) for n in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")):
        return "missing_uid", None
    return None, ds


def load_assembly(config: str | Path) -> AssemblyConfig:
    """The ``[assembly]`` table (routes, group_by, multi_series, multi_image) of a serve config."""
    from drifa_edge.serve.config import load_config

    return load_config(config).assembly
