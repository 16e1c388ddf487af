"""The DICOM SR and summary image of a case: written, read back with pydicom/highdicom
(the reader's API, not our builder), values equal to the predict record; UIDs stable."""

from __future__ import annotations

import copy
import io

import pydicom
import pytest

hd = pytest.importorskip("highdicom", reason="highdicom not installed: pip install 'drifa-edge[serve]'")

from pydicom.sr.codedict import codes  # noqa: E402

from drifa_edge.errors import BadInputError  # noqa: E402
from drifa_edge.serve import results, summary_image  # noqa: E402

COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"  # DICOM PS3.4 B.5


def reread(ds):
    """``ds`` written to bytes and read back as a highdicom SR."""
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    buf.seek(0)
    return hd.sr.srread(buf)


def _texts(items, code) -> list[str]:
    """TEXT values named ``code`` anywhere below ``items`` (an SR content sequence)."""
    found = []
    for item in items:
        name = item.ConceptNameCodeSequence[0]
        if item.ValueType == "TEXT" and (name.CodeValue, name.CodingSchemeDesignator) == (
            code.value,
            code.scheme_designator,
        ):
            found.append(str(item.TextValue))
        found += _texts(item.get("ContentSequence", []), code)
    return found


def read_sr_values(sr) -> dict[str, dict]:
    """What a PACS-side consumer reads from the SR, per task (via highdicom's reader)."""
    out = {}
    for group in sr.content.get_image_measurement_groups():
        task = str(group.tracking_identifier)
        values = {"tracking_uid": str(group.tracking_uid)}
        for m in group.get_measurements():
            values[(m.name.value, m.name.scheme_designator)] = (m.value, m.unit.value)
            if m.name == codes.DCM.Probability:
                derivation = m.derivation
                values["probability_derivation"] = derivation.meaning if derivation else None
        for q in group.get_qualitative_evaluations():
            values[(q.name.value, q.name.scheme_designator)] = q.value
        values["sources"] = [s.referenced_sop_instance_uid for s in group.source_images]
        algorithm = _texts(group, codes.DCM.AlgorithmName)
        values["algorithm"] = algorithm[0] if algorithm else None
        values["parameters"] = _texts(group, codes.DCM.AlgorithmParameters)
        out[task] = values
    return out


def check_sr_matches(sr, case, version: int = 1) -> None:
    """Every value in the SR equals the record's (used here and by the Orthanc test)."""
    record = case.record
    values = read_sr_values(sr)
    assert sorted(values) == sorted(record["tasks"])
    for task, r in record["tasks"].items():
        v = values[task]
        assert v[("122157", "DCM")] == (pytest.approx(r["confidence"], rel=1e-9), "1")
        assert v["probability_derivation"] == "Mean"
        assert v[("MI", "99DRIFA")] == (pytest.approx(r["mutual_information"], rel=1e-9), "{nat}")
        assert v[("PREDENT", "99DRIFA")] == (pytest.approx(r["predictive_entropy"], rel=1e-9), "{nat}")
        assert v[("EXPENT", "99DRIFA")] == (pytest.approx(r["expected_entropy"], rel=1e-9), "{nat}")
        predicted = v[("278201002", "SCT")]
        assert (predicted.value, predicted.scheme_designator, predicted.meaning) == (
            f"{task}/{r['predicted']}",
            "99DRIFA",
            r["predicted"],
        )
        expected_refer = {True: "Yes", False: "No", None: "Undetermined"}[r["refer"]]
        assert v[("REFER", "99DRIFA")].meaning == expected_refer
        assert v["sources"] == [str(case.sources[task].SOPInstanceUID)]
        assert v["algorithm"] == "DRIFA-Net blood+chest"
        for param in (
            f"model_sha256={record['model_sha256']}",
            f"runtime={record['runtime']}",
            f"precision={record['precision']}",
            f"samples={record['samples']}",
            f"result_version={version}",
        ):
            assert param in v["parameters"]
    assert sr.StudyInstanceUID == case.study_uid
    assert sr.PatientID == case.sources["blood"].PatientID
    assert sr.SeriesInstanceUID not in {str(ds.SeriesInstanceUID) for ds in case.sources.values()}
    evidence = {
        str(inst.ReferencedSOPInstanceUID)
        for study in sr.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for inst in series.ReferencedSOPSequence
    }
    assert evidence == {str(ds.SOPInstanceUID) for ds in case.sources.values()}
    assert sr.VerificationFlag == "UNVERIFIED" and sr.CompletionFlag == "COMPLETE"
    assert sr.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == "99DRIFA"


def test_sr_written_and_read_back_equals_record(result_case, tmp_path):
    files = results.write_results(tmp_path, result_case.record, result_case.sources, result_case.card)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sr-v1.dcm", "summary-v1.dcm"]  # no temp left
    raw = pydicom.dcmread(files.sr_path)
    assert raw.SOPClassUID == COMPREHENSIVE_3D_SR  # the standard's UID, not highdicom's constant
    sr = hd.sr.srread(files.sr_path)
    check_sr_matches(sr, result_case)
    assert sr.SOPInstanceUID == files.uids.sr_instance


def test_referral_yes_no_undetermined_each_coded(result_case, tmp_path):
    """The fixture has blood with a threshold (True or False) and chest without (None);
    flip blood to cover the other boolean."""
    record = copy.deepcopy(result_case.record)
    assert record["tasks"]["chest"]["refer"] is None and record["tasks"]["blood"]["refer"] in (True, False)
    record["tasks"]["blood"]["refer"] = not record["tasks"]["blood"]["refer"]
    result_case.record = record
    sr = results.build_sr(record, result_case.sources, result_case.card)
    check_sr_matches(reread(sr), result_case)


def test_uids_deterministic_per_case_and_version(result_case):
    a = results.build_sr(result_case.record, result_case.sources, result_case.card)
    b = results.build_sr(copy.deepcopy(result_case.record), result_case.sources, result_case.card)
    assert (a.SOPInstanceUID, a.SeriesInstanceUID) == (b.SOPInstanceUID, b.SeriesInstanceUID)
    v2 = results.build_sr(result_case.record, result_case.sources, result_case.card, result_version=2)
    other = dict(result_case.record, case_id="case-002")
    c = results.build_sr(other, result_case.sources, result_case.card)
    uids = {a.SOPInstanceUID, v2.SOPInstanceUID, c.SOPInstanceUID, a.SeriesInstanceUID}
    assert len(uids) == 4
    assert v2.InstanceNumber == 2
    for uid in uids:
        assert uid.startswith("2.25.") and len(uid) <= 64
    # the tracking UIDs per task are stable too, and distinct between tasks
    ta, tb = read_sr_values(reread(a)), read_sr_values(reread(b))
    assert {t: v["tracking_uid"] for t, v in ta.items()} == {t: v["tracking_uid"] for t, v in tb.items()}
    assert ta["blood"]["tracking_uid"] != ta["chest"]["tracking_uid"]


def test_summary_image_marked_not_for_diagnosis(result_case, tmp_path):
    files = results.write_results(tmp_path, result_case.record, result_case.sources, result_case.card)
    sc = pydicom.dcmread(files.summary_path)
    assert sc.StudyInstanceUID == result_case.study_uid
    assert sc.SOPInstanceUID == files.uids.sc_instance != files.uids.sr_instance
    assert sc.BurnedInAnnotation == "YES"
    assert "NOT FOR DIAGNOSTIC USE" in sc.ImageComments and "NOT FOR DIAGNOSTIC USE" in sc.SeriesDescription
    pixels = sc.pixel_array
    assert pixels.shape == (512, 512) and (pixels > 128).sum() > 500 and (pixels == 0).mean() > 0.5  # text
    lines = summary_image.summary_lines(result_case.record, 1)
    assert lines[0] == lines[-1] == summary_image.NOT_FOR_DIAGNOSTIC_USE_LINE
    assert any(result_case.record["tasks"]["blood"]["predicted"] in line for line in lines)


def test_failed_record_gets_no_sr(result_case):
    bad = dict(result_case.record, status="error", error="unreadable", tasks=None)
    with pytest.raises(BadInputError, match="status 'ok'"):
        results.build_sr(bad, result_case.sources, result_case.card)


def test_class_not_on_card_refused(result_case):
    record = copy.deepcopy(result_case.record)
    record["tasks"]["chest"]["predicted"] = "covid"
    with pytest.raises(BadInputError, match="'covid' is not one of"):
        results.build_sr(record, result_case.sources, result_case.card)


def test_sources_from_two_studies_refused(result_case):
    sources = dict(result_case.sources)
    other = copy.deepcopy(sources["chest"])
    other.StudyInstanceUID = pydicom.uid.generate_uid()
    sources["chest"] = other
    with pytest.raises(BadInputError, match="2 studies"):
        results.build_sr(result_case.record, sources, result_case.card)


def test_sources_from_disk_without_pixels_non_ascii_names_several_per_task(result_case, tmp_path):
    """As the service has them: files read back with stop_before_pixels, a UTF-8 patient name
    (Icelandic letters), two instances for one task. Both results keep the character set."""
    name = "Þórðardóttir^Guðrún"
    for task, ds in result_case.sources.items():
        ds.SpecificCharacterSet, ds.PatientName = "ISO_IR 192", name
        ds.save_as(tmp_path / f"{task}.dcm", enforce_file_format=True)
    second = copy.deepcopy(result_case.sources["blood"])
    second.SOPInstanceUID = pydicom.uid.generate_uid()
    second.save_as(tmp_path / "blood-2.dcm", enforce_file_format=True)
    read = {p.stem: pydicom.dcmread(p, stop_before_pixels=True) for p in tmp_path.glob("*.dcm")}
    sources = {"blood": [read["blood"], read["blood-2"]], "chest": read["chest"]}
    files = results.write_results(tmp_path / "out", result_case.record, sources, result_case.card)
    for path in files.paths:
        ds = pydicom.dcmread(path)
        assert ds.SpecificCharacterSet == "ISO_IR 192" and str(ds.PatientName) == name
    sr = hd.sr.srread(files.sr_path)
    blood = read_sr_values(sr)["blood"]
    assert blood["sources"] == [str(read["blood"].SOPInstanceUID), str(second.SOPInstanceUID)]


def test_no_dicom_sources_or_incomplete_ones_refused(result_case):
    with pytest.raises(BadInputError, match="JSON record only"):
        results.build_sr(result_case.record, {}, result_case.card)
    broken = copy.deepcopy(result_case.sources["chest"])
    del broken.SOPInstanceUID
    with pytest.raises(BadInputError, match="task chest: a source instance lacks"):
        results.build_sr(result_case.record, {**result_case.sources, "chest": broken}, result_case.card)


def test_sources_without_patient_and_study_type2_attributes(result_case, tmp_path):
    """Modalities often omit Type 2 attributes (PatientBirthDate, PatientSex, StudyID...): the SR is
    still made, carries them empty, and the source datasets are left as they were."""
    sources = {task: copy.deepcopy(ds) for task, ds in result_case.sources.items()}
    for ds in sources.values():
        for keyword in results.PATIENT_STUDY_TYPE2:
            if keyword in ds and keyword not in ("PatientName", "PatientID"):  # compared below
                delattr(ds, keyword)
    files = results.write_results(tmp_path, result_case.record, sources, result_case.card)
    raw = pydicom.dcmread(files.sr_path)
    assert "PatientBirthDate" in raw and not raw.PatientBirthDate
    assert raw.StudyInstanceUID == next(iter(sources.values())).StudyInstanceUID
    assert all("PatientBirthDate" not in ds for ds in sources.values())
    check_sr_matches(hd.sr.srread(files.sr_path), result_case)


def test_dcmtk_reads_the_sr_without_complaint(result_case, tmp_path):
    """A third-party SR parser (dcmtk's dsrdump) reads the file: no warning, no error, and
    the tree shows the class and the referral."""
    import shutil
    import subprocess

    if shutil.which("dsrdump") is None:
        pytest.skip("dcmtk is not installed (apt-get install dcmtk; .ci/run does)")
    files = results.write_results(tmp_path, result_case.record, result_case.sources, result_case.card)
    proc = subprocess.run(["dsrdump", str(files.sr_path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert proc.stdout.startswith("Comprehensive 3D SR Document")
    blood = result_case.record["tasks"]["blood"]
    assert f'(blood/{blood["predicted"]},99DRIFA,"{blood["predicted"]}")' in proc.stdout
    assert 'CODE:(,,"Refer to a human reader")=(373068000,SCT,"Undetermined")' in proc.stdout  # chest
    assert '"mc_seed=null"' in proc.stdout
