"""`drifa-edge check --write-card`: the gate's verdict and the build's speed on this CPU go into
the candidate's card under this CPU's ISA class, where --precision auto reads them."""

from __future__ import annotations

import shutil
import sys

import pytest

from drifa_edge.artifact.card import read_card
from drifa_edge.drift import check as check_module
from drifa_edge.runtimes.choice import choose_for_artifact, records
from drifa_edge.runtimes.cpu import isa_class


@pytest.fixture
def stub_split(artifacts, monkeypatch):
    def load_split(values, card, split, limit):
        images, _, labels, ids = artifacts.test if split == "test" else artifacts.val
        return images, labels, ids

    monkeypatch.setattr(check_module, "load_split", load_split)


def _check(monkeypatch, *args) -> int:
    from drifa_edge.cli import main
    from drifa_edge.runtimes.threads import THREADS_ENV

    monkeypatch.delenv(THREADS_ENV, raising=False)  # --threads sets it: restored after the test
    monkeypatch.setattr(sys, "argv", ["drifa-edge", "check", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return exit_info.value.code


@pytest.mark.parametrize("which, code, gate", [("identical", 0, "pass"), ("hot", 8, "fail")])
def test_write_card_records_verdict_and_speed(
    artifacts, stub_split, monkeypatch, tmp_path, which, code, gate
):
    candidate = tmp_path / which
    shutil.copytree(getattr(artifacts, which), candidate)
    args = ["--data", "stub", "--samples", 8, "--threads", 1, "--write-card"]
    policy = ["--policy", "strict-clinical"] if which == "hot" else []
    assert _check(monkeypatch, artifacts.reference, candidate, *args, *policy) == code
    (record,) = records(read_card(candidate, verify=False), isa_class())
    assert (record.runtime, record.precision, record.gate) == ("torch", "fp32", gate)
    assert record.p50_ms is not None and record.p50_ms > 0 and record.samples == 8
    assert record.threads == 1 and record.reference == "torch/fp32"
    read_card(candidate)  # every file still matches its sha256: only the card changed
    # auto on a checkpoint: torch fp32 either way (passed: it is the fastest recorded; failed: fallback)
    assert choose_for_artifact(candidate).precision == "fp32"
