"""A Secondary Capture image with a case's result as burned-in text, for viewers that
render SR poorly. Marked not for diagnostic use four ways: BurnedInAnnotation YES,
ImageComments, the series description, and the first and last lines of the text. It joins
the source study in its own series (UIDs from ``results.result_uids``), with the source's
patient attributes and Specific Character Set.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from drifa_edge import __version__
from drifa_edge.artifact.card import ModelCard
from drifa_edge.serve.results import (
    MANUFACTURER,
    check_inputs,
    import_highdicom,
    result_uids,
    sources_by_task,
)

SC_SERIES_NUMBER = 9902
NOT_FOR_DIAGNOSIS = "NOT FOR DIAGNOSTIC USE"
NOT_FOR_DIAGNOSTIC_USE_LINE = f"*** {NOT_FOR_DIAGNOSIS} - AI RESULT, UNVERIFIED ***"


def summary_lines(record: Mapping[str, Any], version: int) -> list[str]:
    """The text burned into the summary image."""
    lines = [NOT_FOR_DIAGNOSTIC_USE_LINE, f"case {record.get('case_id')}  result v{version}", ""]
    for task, r in (record.get("tasks") or {}).items():
        refer = {None: "undecided", True: "REFER", False: "no"}[r.get("refer")]
        reason = (r.get("referral") or {}).get("reason")
        if r.get("refer") and reason:
            refer += f" ({reason})"
        lines += [
            f"{task}: {r['predicted']}  p={r['confidence']:.3f}",
            f"   MI={r['mutual_information']:.4f}  H={r['predictive_entropy']:.4f} nat  refer: {refer}",
        ]
        if r.get("ood_score") is not None:  # artifact with ood.npz (issue 18)
            verdict = "OUT OF DISTRIBUTION" if r.get("ood") else "in distribution"
            lines.append(f"   OOD score={r['ood_score']:.4g} (threshold {r['ood_threshold']:.4g}): {verdict}")
    lines += [
        "",
        f"model {str(record.get('model_sha256'))[:16]}  {record.get('runtime')}/{record.get('precision')}",
        f"T={record.get('samples')}  drifa-edge {record.get('drifa_edge_version')}",
        NOT_FOR_DIAGNOSTIC_USE_LINE,
    ]
    return lines


def _render(lines: Sequence[str], size: int = 512):
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    for i, line in enumerate(lines):
        draw.text((10, 10 + 18 * i), line, fill=255, font=font)
    return np.asarray(img, dtype=np.uint8)


def build_summary_image(
    record: Mapping[str, Any],
    sources: Mapping[str, Any],
    card: ModelCard,
    result_version: int | None = None,
):
    """A Secondary Capture image with the result as burned-in text, marked not for diagnostic
    use (BurnedInAnnotation YES, ImageComments, the series description and the text itself).
    Viewers that render SR poorly still show this. Same checks as :func:`build_sr`."""
    hd = import_highdicom()
    srcs = sources_by_task(sources)
    study_uid = check_inputs(record, srcs, card)
    version = int(result_version if result_version is not None else record.get("result_version", 1))
    uids = result_uids(study_uid, str(record["case_id"]), version, str(record.get("model_sha256") or ""))
    first = next(ds for dss in srcs.values() for ds in dss)
    sc = hd.sc.SCImage(
        pixel_array=_render(summary_lines(record, version)),
        photometric_interpretation="MONOCHROME2",
        bits_allocated=8,
        coordinate_system="PATIENT",
        study_instance_uid=study_uid,
        series_instance_uid=uids.sc_series,
        series_number=SC_SERIES_NUMBER,
        sop_instance_uid=uids.sc_instance,
        instance_number=version,
        manufacturer=MANUFACTURER,
        patient_id=first.get("PatientID"),
        patient_name=first.get("PatientName"),
        patient_birth_date=first.get("PatientBirthDate"),
        patient_sex=first.get("PatientSex") or None,
        accession_number=first.get("AccessionNumber"),
        study_id=first.get("StudyID"),
        study_date=first.get("StudyDate") or None,
        study_time=first.get("StudyTime") or None,
        referring_physician_name=first.get("ReferringPhysicianName"),
        patient_orientation=("L", "F"),  # required by highdicom; emptied below (type 2: unknown)
        series_description=f"drifa-edge summary v{version} - {NOT_FOR_DIAGNOSIS}",
        software_versions=str(record.get("drifa_edge_version") or __version__),
        specific_character_set=first.get("SpecificCharacterSet"),  # patient names as the source wrote them
    )
    sc.PatientOrientation = None
    sc.BurnedInAnnotation = "YES"
    sc.ImageComments = f"{NOT_FOR_DIAGNOSIS}: rendered summary of an unverified AI result"
    return sc
