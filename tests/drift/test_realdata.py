"""The check on the shared real data: loading, pairing of unequal test sets, report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.mark.realdata
def test_check_on_shared_skin_and_blood(shared_data: Path, tmp_path: Path) -> None:
    """skin_isic9 has 118 test cases, blood_pbc8 304: the skin rows repeated to pair them
    are not scored, so each task is judged on its own test cases exactly once."""
    pytest.importorskip("torch")
    import torch

    from drifa_edge.artifact.card import default_card
    from drifa_edge.artifact.checkpoint import save_checkpoint
    from drifa_edge.data.sources import open_dataset
    from drifa_edge.drift.check import run_check
    from drifa_edge.model.config import ModelConfig, TaskSpec
    from drifa_edge.model.drifa import build_model

    values = [f"skin_isic9={shared_data / 'skin_isic9'}", f"blood_pbc8={shared_data / 'blood_pbc8'}"]
    tasks = tuple(
        TaskSpec(name, open_dataset(name, shared_data / name).classes)
        for name in ("skin_isic9", "blood_pbc8")
    )
    cfg = ModelConfig(tasks=tasks, image_size=32, width=0.125)
    torch.manual_seed(0)
    save_checkpoint(build_model(cfg), default_card(cfg), tmp_path / "model")
    report = run_check(tmp_path / "model", tmp_path / "model", values, samples=4, out=tmp_path / "report")
    assert report.meta["cases"] == {"skin_isic9": 118, "blood_pbc8": 304}
    assert report.tasks["skin_isic9"].reference["cases"] == 118
    assert report.passed  # the same artifact with shared masks
    for t in report.tasks.values():
        assert t.pair["mean_kl"] == 0.0
        assert t.noise["kl"] == 0.0 and t.changed == []  # shared masks: the swaps change nothing
    data = json.loads((tmp_path / "report" / "report.json").read_text())
    assert data["verdict"] == "pass"
