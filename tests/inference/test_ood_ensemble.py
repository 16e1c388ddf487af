"""OOD score of an ensemble: calibrate-ood fits every member, predict scores each member
against its own density and reports the mean of score / threshold (threshold 1)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ood_helpers import expected_ood_scores
from typer.testing import CliRunner

from drifa_edge.artifact.ensemble import member_dir, resolve_members, write_manifest
from drifa_edge.artifact.ood import read_ood
from drifa_edge.errors import ArtifactError
from drifa_edge.inference.engine import EngineConfig
from drifa_edge.inference.manifest import Case
from drifa_edge.inference.ood import load_ood
from drifa_edge.inference.predictor import Predictor, PreparedCase
from drifa_edge.model.config import ModelConfig, TaskSpec
from drifa_edge.runtimes.base import RuntimeOptions

pytest.importorskip("torch")

TASKS = (  # the built-in synthetic set's tasks, so `--data synthetic` fits them
    TaskSpec("derm", ("blob", "ring", "cross")),
    TaskSpec("scan", ("stripes", "checker", "spots"), channels=1),
)
T = 4


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory) -> Path:
    """Two tiny random members (torch seeds 0 and 1), both fitted by calibrate-ood on the
    ensemble folder (a few seconds each)."""
    import torch

    from drifa_edge.artifact.card import default_card
    from drifa_edge.artifact.checkpoint import save_checkpoint
    from drifa_edge.cli import app
    from drifa_edge.model.drifa import build_model

    folder = tmp_path_factory.mktemp("ood_ens") / "ens"
    cfg = ModelConfig(tasks=TASKS, image_size=32, width=0.125, dropout=0.25)
    for k in range(2):
        torch.manual_seed(k)
        save_checkpoint(build_model(cfg).eval(), default_card(cfg), folder / member_dir(k))
    write_manifest(folder, [member_dir(0), member_dir(1)])
    args = [
        "calibrate-ood",
        str(folder),
        "--data",
        "synthetic",
        "-T",
        str(T),
        "--threads",
        "1",
        "--limit",
        "20",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["members"]) == 2
    return folder


def test_every_member_gets_its_own_density(ensemble):
    members = resolve_members(ensemble)
    a, b = (read_ood(m) for m in members)
    for task in ("derm", "scan"):
        assert not np.allclose(a[task].means, b[task].means)  # fitted on each member's features
        assert a[task].fit["samples"] == b[task].fit["samples"] == T


def test_ensemble_score_is_the_mean_of_member_scores_over_thresholds(ensemble):
    """Dropout off: each member's score is computed from that member's PyTorch features with
    scipy (an independent path), and the record holds their threshold-scaled mean."""
    pytest.importorskip("scipy.spatial.distance")
    from drifa_edge.artifact.checkpoint import load_checkpoint
    from drifa_edge.drift.check import load_split

    members = resolve_members(ensemble)
    model0, card = load_checkpoint(members[0])
    images, _, _ = load_split(["synthetic"], card, "test", 4)
    items = [
        PreparedCase(Case(f"c{i}", {t.name: None for t in TASKS}), [x[i] for x in images]) for i in range(4)
    ]
    options = RuntimeOptions(threads=1, extra={"dropout": "off"})
    with Predictor.open(ensemble, "torch", options, EngineConfig(samples=T, seed=0)) as p:
        records = p.predict_prepared(items)
    ratios = {t.name: [] for t in TASKS}
    for member in members:
        model, _ = load_checkpoint(member)
        density = read_ood(member)
        for task, score in expected_ood_scores(model, images, density).items():
            ratios[task].append(score / density[task].threshold)
    for task, r in ratios.items():
        expected = np.mean(r, axis=0)
        got = [rec["tasks"][task]["ood_score"] for rec in records]
        np.testing.assert_allclose(got, expected, rtol=2e-3)  # records keep 6 significant digits
        for rec, e in zip(records, expected, strict=True):
            t = rec["tasks"][task]
            assert t["ood_threshold"] == 1.0 and t["ood"] == bool(e > 1.0)


def test_a_partly_fitted_ensemble_is_refused(ensemble, tmp_path):
    import shutil

    from drifa_edge.artifact.card import read_card, write_card

    copy = tmp_path / "ens"
    shutil.copytree(ensemble, copy)
    member = resolve_members(copy)[1]
    (member / "ood.npz").unlink()
    card = read_card(member, verify=False)
    write_card(card.replace(files={k: v for k, v in card.files.items() if k != "ood.npz"}), member)
    with pytest.raises(ArtifactError, match="have no ood.npz while others do.*calibrate-ood"):
        load_ood(copy)
