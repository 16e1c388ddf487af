"""Out-of-distribution referral in the service's results (issue 18): with ``ood.npz`` beside
the weights, the JSON record and the SR carry, per task, the OOD score (a measurement), the
OOD flag (a qualitative evaluation) and the referral reason ``ood``; read back with
highdicom's reader, the SR's values equal the record's."""

from __future__ import annotations

import copy
import shutil

import numpy as np
import pytest
from serve_helpers import make_study, send, serve_config, start_service, wait_for

hd = pytest.importorskip("highdicom", reason="highdicom not installed: pip install 'drifa-edge[serve]'")

from drifa_edge.inference.writers import apply_ood  # noqa: E402
from drifa_edge.serve import results, summary_image  # noqa: E402
from tests.serve.test_results import read_sr_values, reread  # noqa: E402

OOD_SCORE, OOD_FLAG, REASON, REFER = ("OODSCORE", "99DRIFA"), ("OOD", "99DRIFA"), ("REFREASON", "99DRIFA"), ("REFER", "99DRIFA")  # fmt: skip


def check_ood_in_sr(sr, record) -> None:
    """Per task: OOD score, flag and referral reason in the SR equal the record's."""
    values = read_sr_values(sr)
    for task, r in record["tasks"].items():
        v = values[task]
        if "ood_score" not in r:
            assert OOD_SCORE not in v and OOD_FLAG not in v
            continue
        assert v[OOD_SCORE] == (pytest.approx(r["ood_score"], rel=1e-9), "1")
        assert v[OOD_FLAG].meaning == ("Yes" if r["ood"] else "No")
        assert f"ood_threshold={r['ood_threshold']}" in v["parameters"]
        reason = r["referral"]["reason"]
        if r["refer"] and reason:
            assert (v[REASON].value, v[REASON].scheme_designator) == (reason, "99DRIFA")
        else:
            assert REASON not in v


def test_sr_carries_ood_score_flag_and_reason(result_case):
    record = copy.deepcopy(result_case.record)
    blood, chest = record["tasks"]["blood"], record["tasks"]["chest"]
    blood["refer"], blood["referral"]["reason"] = False, None
    apply_ood(blood, 412.5, 100.0)  # flagged: referred with reason "ood"
    apply_ood(chest, 3.25, 100.0)  # in distribution; chest has no MI threshold (refer stays None)
    assert blood["refer"] is True and blood["referral"]["reason"] == "ood" and chest["ood"] is False
    sr = reread(results.build_sr(record, result_case.sources, result_case.card))
    check_ood_in_sr(sr, record)
    values = read_sr_values(sr)
    assert values["blood"][REFER].meaning == "Yes" and values["blood"][REASON].meaning.startswith("Out of")
    assert values["chest"][REFER].meaning == "Undetermined"
    lines = summary_image.summary_lines(record, 1)  # the burned-in text says it too
    assert "   MI=" in lines[4] and lines[4].endswith("refer: REFER (ood)")
    assert lines[5] == "   OOD score=412.5 (threshold 100): OUT OF DISTRIBUTION"
    assert "OOD score=3.25 (threshold 100): in distribution" in lines[8]


def test_sr_without_ood_has_no_ood_items(result_case):
    sr = reread(results.build_sr(result_case.record, result_case.sources, result_case.card))
    check_ood_in_sr(sr, result_case.record)


def _with_ood(tiny_model, folder):
    """A copy of the tiny model with an ``ood.npz``: derm with threshold 0 (every case OOD),
    blood with a threshold no case reaches. One class mean at the origin, identity precision."""
    from drifa_edge.artifact.card import read_card
    from drifa_edge.artifact.ood import TaskDensity, write_ood
    from drifa_edge.export.ood import task_columns

    shutil.copytree(tiny_model, folder)
    card = read_card(folder)
    densities = {}
    for task, threshold in (("derm", 0.0), ("blood", 1e12)):
        start, stop = task_columns(card, task, "branch")
        d = stop - start
        densities[task] = TaskDensity("branch", (start, stop), np.array([0]), np.zeros((1, d)), np.eye(d),
                                      threshold, 0.05, {"samples": 4, "note": "test density"})  # fmt: skip
    write_ood(folder, densities)
    return folder


def test_service_record_and_sr_carry_ood(tiny_model, tmp_path):
    model = _with_ood(tiny_model, tmp_path / "model-ood")
    svc = start_service(model, serve_config(tmp_path / "root"))
    try:
        study = make_study(0)
        assert send(study, svc.dicom_port) == [0, 0]
        wait_for(lambda: svc.store.counts()["DONE"] == 1, 60)
        (case,) = svc.store.cases()
        record = svc.store.result(case.case_id)
        derm, blood = record["tasks"]["derm"], record["tasks"]["blood"]
        assert derm["ood"] is True and derm["refer"] is True and derm["referral"]["reason"] == "ood"
        assert blood["ood"] is False and blood["ood_threshold"] == 1e12
        assert derm["ood_score"] > 0 and blood["ood_score"] > 0  # squared distance to the origin
        sr_path = tmp_path / "root" / "results" / case.case_id / "sr-v1.dcm"
        wait_for(sr_path.is_file, 30)
        check_ood_in_sr(hd.sr.srread(sr_path), record)
    finally:
        svc.stop()
