"""The documented assembly rules as pure functions: which instance a task gets, when a case is
ready or fails (no service, no clock: times are passed in)."""

from __future__ import annotations

import pytest

from drifa_edge.serve.assembly import Ambiguous, choose_instance, decide
from drifa_edge.serve.config import AssemblyConfig, RouteRule
from drifa_edge.serve.store import CaseRow, Instance


def inst(uid, series, number=None, series_number=None, thick=None, at=0.0, task="ct"):
    return Instance(uid, "c", "h", f"/{uid}", 1, series_uid=series, instance_number=number,
                    series_number=series_number, slice_thickness=thick, received_at=at, task=task)  # fmt: skip


def test_multi_image_rules():
    series = [inst(f"i{n}", "s1", number=n, at=10 - n) for n in (3, 1, 4, 2)]  # arrival order differs
    assert choose_instance(series, "latest", "first").sop_uid == "i1"
    assert choose_instance(series, "latest", "last").sop_uid == "i4"
    assert choose_instance(series, "latest", "middle").sop_uid == "i3"  # 4 images: the upper middle
    with pytest.raises(Ambiguous, match="multi_image_series"):
        choose_instance(series, "latest", "refuse")


def test_multi_series_rules():
    thin = inst("thin", "s1", series_number=2, thick=0.6)
    thick = inst("thick", "s2", series_number=3, thick=5.0)
    none = inst("none", "s3", series_number=1)
    assert choose_instance([thin, thick, none], "latest", "middle").sop_uid == "thick"  # highest SeriesNumber
    assert choose_instance([thin, thick, none], "thinnest", "middle").sop_uid == "thin"
    with pytest.raises(Ambiguous, match="ambiguous_series"):
        choose_instance([thin, thick], "refuse", "middle")


def _case(created, last):
    return CaseRow("c", "dicom", "RECEIVING", None, "1.2", None, 1, 0, None, None, created, last, last)


def test_decide_quiet_period_and_max_wait():
    cfg = AssemblyConfig(quiet_seconds=5, max_wait_seconds=60)
    both = [inst("a", "s1", task="derm"), inst("b", "s2", task="blood")]
    assert decide(_case(0, 100), both, ("derm", "blood"), cfg, now=104).action == "wait"  # not quiet yet
    ready = decide(_case(0, 100), both, ("derm", "blood"), cfg, now=105)
    assert ready.action == "ready" and {t: i.sop_uid for t, i in ready.inputs.items()} == {
        "derm": "a",
        "blood": "b",
    }
    one = both[:1]
    assert decide(_case(0, 10), one, ("derm", "blood"), cfg, now=59).action == "wait"
    failed = decide(_case(0, 10), one, ("derm", "blood"), cfg, now=60)
    assert (failed.action, failed.reason) == ("fail", "missing_task") and "blood" in failed.detail
    assert decide(_case(0, 58), one, ("derm", "blood"), cfg, now=60).action == "wait"  # still arriving
    unrouted = [*both, inst("loc", "s9", task=None)]
    assert decide(_case(0, 0), unrouted, ("derm", "blood"), cfg, now=10).action == "ready"


def test_route_rules():
    rule = RouteRule("derm", modality="xc", series_description="(?i)dermo")
    assert rule.matches({"modality": "XC", "series_description": "Dermoscopy left arm"})
    assert not rule.matches({"modality": "OT", "series_description": "Dermoscopy"})
    assert not rule.matches({"modality": "XC", "series_description": "chest"})
    with pytest.raises(Exception, match="matches nothing"):
        RouteRule("derm")
