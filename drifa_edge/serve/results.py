"""DICOM results of one case: a Comprehensive 3D SR (TID 1500 Measurement Report) made
with highdicom, and an optional Secondary Capture summary image (``summary_image``), both
deterministic in their UIDs so that a retry never makes a second result.

What the SR holds (one TID 1501 "Measurements and qualitative evaluations" group per task):

============================  ==================================================================
content item                  coding
============================  ==================================================================
tracking identifier           the task name; a UID derived from (study, case, version, task)
finding type                  ``(<task>, 99DRIFA, "<task> classification")``
predicted class               qualitative evaluation: name ``(278201002, SCT, "Classification")``,
                              value ``(<task>/<class>, 99DRIFA, <class>)`` (class names from the
                              model card)
referral                      qualitative evaluation: name ``(REFER, 99DRIFA, "Refer to a human
                              reader")``, value SCT Yes / No, or Undetermined when the card has
                              no fitted threshold (the record's ``refer: null``)
mean probability              measurement ``(122157, DCM, "Probability")``, derivation
                              ``(373098007, SCT, "Mean")``, unit UCUM ``1``: the MC mean
                              probability of the predicted class (the record's ``confidence``)
mutual information            measurement ``(MI, 99DRIFA, ...)``, unit UCUM ``{nat}``
predictive entropy            measurement ``(PREDENT, 99DRIFA, ...)``, unit UCUM ``{nat}``
expected entropy              measurement ``(EXPENT, 99DRIFA, ...)``, unit UCUM ``{nat}``
OOD score (with ``ood.npz``)  measurement ``(OODSCORE, 99DRIFA, "Out-of-distribution score
                              (squared Mahalanobis distance)")``, unit UCUM ``1``; the
                              threshold as algorithm parameter ``ood_threshold=``
OOD flag (with ``ood.npz``)   qualitative evaluation: name ``(OOD, 99DRIFA, "Out of the training
                              distribution")``, value SCT Yes / No
referral reason (if referred) qualitative evaluation: name ``(REFREASON, 99DRIFA, "Referral
                              reason")``, value ``(ood | uncertainty | input_quality, 99DRIFA,
                              ...)``: the record's ``referral.reason``
algorithm identification      name ``DRIFA-Net <tasks>``, version = drifa-edge version, parameters
                              ``model_sha256=``, ``runtime=``, ``precision=``, ``samples=`` (T),
                              ``ensemble_size=``, ``device=``, ``mc_seed=``, ``result_version=``,
                              ``referral=<metric> > <threshold> (score <s>)``
source images                 the source instances used for that task
============================  ==================================================================

``99DRIFA`` is a private coding scheme (DICOM PS3.16 reserves designators starting with
``99`` for local use); the SR declares it in the Coding Scheme Identification Sequence.
Class codes are ``<task>/<class>`` because the same class name may occur in two tasks;
the code meaning is the class name as written in the model card. Entropies are in nats
(natural log, ``drifa_edge.inference.uncertainty``); UCUM has no nat, so the unit is
the dimensionless ``{nat}`` annotation. Numbers are the record's (6 significant digits).

Study: the SR and the summary join the source study (same Study Instance UID, patient
and study attributes copied from the first source instance), in new series; the sources
are listed as evidence. The SR is complete and unverified (an algorithm's result).

UIDs (:func:`result_uids`) are ``2.25.<n>`` UIDs (PS3.5 B.2) of name-based UUIDs (RFC 4122
version 5) of (study UID, case id, result version, kind): rebuilding a result after a crash gives
the same SOP Instance UIDs, so a PACS that receives it twice keeps one copy. The caller
must therefore build one (case, version) from one stored record only; a new inference
of the same case is a new result version.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from io import BytesIO
from pathlib import Path
from typing import Any

from drifa_edge import __version__
from drifa_edge.artifact.atomic import atomic_write
from drifa_edge.artifact.card import ModelCard
from drifa_edge.errors import BadInputError, missing_dependency

SCHEME = "99DRIFA"
SCHEME_NAME = "drifa-edge model card class names and MC dropout uncertainty measures"
MANUFACTURER = "drifa-edge"
UNIT_NAT = ("{nat}", "UCUM", "nat (natural-log information unit, dimensionless)")
UID_NAMESPACE = "drifa-edge/result/1"  # change only with a new UID scheme: it moves every UID
SR_SERIES_NUMBER = 9901
OOD_SCORE = ("OODSCORE", "Out-of-distribution score (squared Mahalanobis distance)")
OOD_FLAG = ("OOD", "Out of the training distribution")
REFERRAL_REASON = ("REFREASON", "Referral reason")
# the record's referral.reason values (drifa_edge.inference.writers) as coded values
REFERRAL_REASONS = {
    "ood": "Out of the training distribution (OOD score above threshold)",
    "uncertainty": "MC dropout uncertainty above threshold",
    "input_quality": "Input quality (the image failed an input check)",
}
# (record key, code value, code meaning) of the uncertainty measurements, in nats
_ENTROPIES = (
    ("mutual_information", "MI", "Mutual information (MC dropout, epistemic)"),
    ("predictive_entropy", "PREDENT", "Predictive entropy (MC dropout, total)"),
    ("expected_entropy", "EXPENT", "Expected entropy (MC dropout, aleatoric)"),
)


def import_highdicom():
    """highdicom, or the error naming the extra to install."""
    try:
        import highdicom
    except ImportError as e:
        raise missing_dependency("highdicom", "serve") from e
    return highdicom


# ------------------------------------------------------------------ UIDs


@dataclass(frozen=True)
class ResultUids:
    """The UIDs of one result version of one case (all ``2.25.`` UIDs, deterministic)."""

    sr_series: str
    sr_instance: str
    sc_series: str
    sc_instance: str
    observer_device: str

    def tracking(self, task: str) -> str:
        return _uid(self.sr_instance, "tracking", task)


_UUID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, UID_NAMESPACE)


def _uid(*parts: str) -> str:
    # Not pydicom's generate_uid(prefix=None, entropy_srcs=...): with prefix None it ignores
    # the entropy and returns a random UUID4. A name-based UUID (RFC 4122 v5, SHA-1) as a
    # 2.25 UID (DICOM PS3.5 B.2) is deterministic and needs no registered root.
    return f"2.25.{uuid.uuid5(_UUID_NAMESPACE, chr(0x1F).join(parts)).int}"


def result_uids(study_uid: str, case_id: str, result_version: int, model_sha256: str = "") -> ResultUids:
    """UIDs of a case's result version; the same inputs always give the same UIDs."""
    if result_version < 1:
        raise BadInputError(f"result_version must be >= 1, got {result_version}")
    key = (str(study_uid), str(case_id), str(int(result_version)))
    return ResultUids(
        sr_series=_uid(*key, "sr-series"),
        sr_instance=_uid(*key, "sr-instance"),
        sc_series=_uid(*key, "sc-series"),
        sc_instance=_uid(*key, "sc-instance"),
        observer_device=_uid("device", model_sha256 or "unknown"),
    )


# ------------------------------------------------------------------ checks


def sources_by_task(sources: Mapping[str, Any]) -> dict[str, list[Any]]:
    """``{task: Dataset or [Dataset, ...]}`` as ``{task: [Dataset, ...]}``."""
    out = {}
    for task, ds in sources.items():
        out[task] = list(ds) if isinstance(ds, (list, tuple)) else [ds]
    return out


def check_inputs(record: Mapping[str, Any], sources: dict[str, list[Any]], card: ModelCard) -> str:
    """The study UID of a result, after checking the record (``ok``, the card's tasks and
    classes) and the sources (UIDs present, one study); :class:`BadInputError` otherwise."""
    case = record.get("case_id", "?")
    if record.get("status") != "ok" or not isinstance(record.get("tasks"), Mapping):
        raise BadInputError(
            f"case {case}: a DICOM result needs a record with status 'ok' and tasks, got status "
            f"{record.get('status')!r} (error {record.get('error')!r}); failed cases get no SR"
        )
    tasks = set(record["tasks"])
    if tasks != set(card.task_names):
        raise BadInputError(
            f"case {case}: record tasks {sorted(tasks)} != model card tasks {sorted(card.task_names)}; "
            "build the result with the card of the model that made the record"
        )
    for spec in card.model.tasks:
        predicted = record["tasks"][spec.name].get("predicted")
        if predicted not in spec.classes:
            raise BadInputError(
                f"case {case}, task {spec.name}: predicted class {predicted!r} is not one of the card's "
                f"{list(spec.classes)}"
            )
        for name in spec.classes:
            if "\\" in name or len(name) > 64:
                raise BadInputError(
                    f"task {spec.name}: class name {name!r} cannot be a DICOM code meaning "
                    "(at most 64 characters, no backslash); rename it in the model card"
                )
    if not any(sources.values()):
        raise BadInputError(
            f"case {case}: no source DICOM instances; an SR joins the study of its images, so a case "
            "that did not arrive as DICOM gets the JSON record only"
        )
    unknown = set(sources) - tasks
    if unknown:
        raise BadInputError(f"case {case}: sources for unknown tasks {sorted(unknown)}")
    for task, dss in sources.items():
        for ds in dss:
            if not ds.get("StudyInstanceUID") or not ds.get("SOPInstanceUID") or not ds.get("SOPClassUID"):
                raise BadInputError(
                    f"case {case}, task {task}: a source instance lacks its Study/SOP Instance/SOP Class "
                    "UID; pass the datasets as received (stop_before_pixels is fine)"
                )
    studies = {str(ds.StudyInstanceUID) for dss in sources.values() for ds in dss}
    if len(studies) != 1:
        raise BadInputError(
            f"case {case}: source instances come from {len(studies)} studies {sorted(studies)}; "
            "one result belongs to one study"
        )
    return studies.pop()


# ------------------------------------------------------------------ SR content


def _code(value: str, meaning: str, scheme: str = SCHEME):
    return import_highdicom().sr.CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)


def class_code(task: str, name: str):
    """The coded concept of class ``name`` of ``task`` (see the module doc)."""
    return _code(f"{task}/{name}", name)


def referral_concept():
    return _code("REFER", "Refer to a human reader")


def reason_code(reason: str):
    """The coded value of a referral reason (``ood``, ``uncertainty``, ``input_quality``)."""
    return _code(reason, REFERRAL_REASONS.get(reason, reason)[:64])


def entropy_concept(key: str):
    for k, value, meaning in _ENTROPIES:
        if k == key:
            return _code(value, meaning)
    raise KeyError(key)


def model_name(card: ModelCard) -> str:
    return f"DRIFA-Net {'+'.join(card.task_names)}"[:64]


def algorithm_parameters(
    record: Mapping[str, Any], task_result: Mapping[str, Any], version: int
) -> list[str]:
    """``key=value`` strings of the TID 4019 Algorithm Parameters (JSON ``null`` for None)."""
    keys = ("model_sha256", "runtime", "precision", "samples", "ensemble_size", "device", "mc_seed")
    params = [f"{key}={_text(record.get(key))}" for key in keys] + [f"result_version={version}"]
    rule = task_result.get("referral") or {}
    if rule.get("threshold") is not None:
        params.append(f"referral={rule['metric']} > {rule['threshold']} (score {rule['score']})")
    else:
        params.append(f"referral=undecided (no fitted threshold for {rule.get('metric')})")
    if task_result.get("ood_threshold") is not None:
        params.append(f"ood_threshold={task_result['ood_threshold']}")
    return params


def _text(value: Any) -> str:
    return "null" if value is None else str(value)


def _task_group(hd, codes, task, result, record, sources, card, uids, version):
    sr = hd.sr
    nat = sr.CodedConcept(*UNIT_NAT)
    algorithm = sr.AlgorithmIdentification(
        name=model_name(card),
        version=str(record.get("drifa_edge_version") or __version__),
        parameters=algorithm_parameters(record, result, version),
        manufacturer=MANUFACTURER,
    )
    measurements = [
        sr.Measurement(
            name=codes.DCM.Probability,
            value=float(result["confidence"]),
            unit=codes.UCUM.NoUnits,
            derivation=codes.SCT.Mean,
        )
    ]
    measurements += [
        sr.Measurement(name=entropy_concept(key), value=float(result[key]), unit=nat)
        for key, _, _ in _ENTROPIES
        if result.get(key) is not None
    ]
    if result.get("ood_score") is not None:
        measurements.append(sr.Measurement(name=_code(*OOD_SCORE), value=float(result["ood_score"]),
                                           unit=codes.UCUM.NoUnits))  # fmt: skip
    refer = result.get("refer")
    referral_value = codes.SCT.Undetermined if refer is None else (codes.SCT.Yes if refer else codes.SCT.No)
    evaluations = [
        sr.QualitativeEvaluation(codes.SCT.Classification, class_code(task, result["predicted"])),
        sr.QualitativeEvaluation(referral_concept(), referral_value),
    ]
    if result.get("ood") is not None:
        flag = codes.SCT.Yes if result["ood"] else codes.SCT.No
        evaluations.append(sr.QualitativeEvaluation(_code(*OOD_FLAG), flag))
    reason = (result.get("referral") or {}).get("reason")
    if refer and reason:
        evaluations.append(sr.QualitativeEvaluation(_code(*REFERRAL_REASON), reason_code(reason)))
    return sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=sr.TrackingIdentifier(uid=uids.tracking(task), identifier=task),
        finding_type=_code(task, f"{task} classification"[:64]),
        algorithm_id=algorithm,
        measurements=measurements,
        qualitative_evaluations=evaluations,
        source_images=[
            sr.SourceImageForMeasurementGroup(str(ds.SOPClassUID), str(ds.SOPInstanceUID))
            for ds in sources.get(task, [])
        ],
    )


# Patient and study attributes that highdicom copies from the first evidence instance. They are
# Type 2 in the SR (present, may be empty), and modalities often omit them (PS3.3 C.7.1.1, C.7.2.1).
PATIENT_STUDY_TYPE2 = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
    "StudyDate", "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName",
)  # fmt: skip


def with_patient_study_type2(ds):
    """``ds`` itself when it has every attribute of :data:`PATIENT_STUDY_TYPE2`; otherwise a shallow
    copy with the missing ones present and empty, so the SR carries them empty (DICOM's rule for
    Type 2) instead of failing. The source dataset is never changed."""
    missing = [k for k in PATIENT_STUDY_TYPE2 if k not in ds]
    if not missing:
        return ds
    from pydicom import Dataset

    out = Dataset({tag: ds.get_item(tag) for tag in ds.keys()})  # new mapping, same (raw) elements
    out.file_meta = getattr(ds, "file_meta", Dataset())
    for keyword in missing:
        setattr(out, keyword, None)
    return out


def build_sr(
    record: Mapping[str, Any],
    sources: Mapping[str, Any],
    card: ModelCard,
    result_version: int | None = None,
    created: datetime | None = None,
):
    """The Comprehensive 3D SR (``highdicom.sr.Comprehensive3DSR``) of one case's record.

    ``record`` is a ``predict`` JSON record (``status == "ok"``); ``sources`` maps each
    task to the source pydicom Dataset(s) it was inferred from (pixel data not needed);
    ``result_version`` defaults to ``record["result_version"]`` or 1. Raises
    :class:`BadInputError` for a failed record, tasks or classes not on the card, or
    sources from more than one study.
    """
    hd = import_highdicom()
    from pydicom.sr.codedict import codes

    srcs = sources_by_task(sources)
    study_uid = check_inputs(record, srcs, card)
    version = int(result_version if result_version is not None else record.get("result_version", 1))
    uids = result_uids(study_uid, str(record["case_id"]), version, str(record.get("model_sha256") or ""))
    groups = [
        _task_group(hd, codes, task, record["tasks"][task], record, srcs, card, uids, version)
        for task in card.task_names
    ]
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=uids.observer_device,
            name="drifa-edge",
            manufacturer_name=MANUFACTURER,
            model_name=model_name(card),
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=codes.SCT.Imaging,
        imaging_measurements=groups,
    )
    evidence = [ds for dss in srcs.values() for ds in dss]
    evidence[0] = with_patient_study_type2(evidence[0])
    when = created or datetime.now()
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report,
        series_instance_uid=uids.sr_series,
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=uids.sr_instance,
        instance_number=version,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=True,
        is_verified=False,
        series_description=f"drifa-edge AI result v{version} (unverified)",
        content_date=when.date(),
        content_time=when.time(),
        manufacturer_model_name=model_name(card),
        software_versions=str(record.get("drifa_edge_version") or __version__),
        coding_schemes=[
            hd.coding_schemes.CodingSchemeIdentificationItem(
                SCHEME, name=SCHEME_NAME, responsible_organization=MANUFACTURER
            )
        ],
    )
    return sr


# ------------------------------------------------------------------ files


@dataclass(frozen=True)
class ResultFiles:
    """Where the DICOM results of one case version were written."""

    sr_path: Path
    summary_path: Path | None
    uids: ResultUids

    @property
    def paths(self) -> list[Path]:
        return [p for p in (self.sr_path, self.summary_path) if p is not None]


def write_dataset(ds, path: str | Path) -> Path:
    """Write a DICOM file atomically (``artifact.atomic_write``: temp file, fsync, rename)."""
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return atomic_write(path, buf.getvalue())


def write_results(
    out_dir: str | Path,
    record: Mapping[str, Any],
    sources: Mapping[str, Any],
    card: ModelCard,
    result_version: int | None = None,
    summary_image: bool = True,
) -> ResultFiles:
    """Build and write ``sr-v<version>.dcm`` (and ``summary-v<version>.dcm``) in ``out_dir``.

    Rewriting the same case version gives files with the same UIDs (content date/time and
    instance creation time may differ), so sending either copy is the same result."""
    out_dir = Path(out_dir)
    sr = build_sr(record, sources, card, result_version)
    version = int(sr.InstanceNumber)
    sr_path = write_dataset(sr, out_dir / f"sr-v{version}.dcm")
    summary_path = None
    if summary_image:
        from drifa_edge.serve.summary_image import build_summary_image

        sc = build_summary_image(record, sources, card, version)
        summary_path = write_dataset(sc, out_dir / f"summary-v{version}.dcm")
    uids = result_uids(
        str(sr.StudyInstanceUID), str(record["case_id"]), version, str(record.get("model_sha256") or "")
    )
    return ResultFiles(sr_path, summary_path, uids)
