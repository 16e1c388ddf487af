"""Ensembles: K members with their own seeds, the manifest, resolving members."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from drifa_edge.artifact.card import read_card  # noqa: E402
from drifa_edge.artifact.ensemble import ENSEMBLE_FORMAT, resolve_members  # noqa: E402
from drifa_edge.data.synthetic import make_synthetic  # noqa: E402
from drifa_edge.errors import ArtifactError, ConfigError  # noqa: E402
from drifa_edge.training.config import TrainConfig  # noqa: E402
from drifa_edge.training.ensemble import train_ensemble  # noqa: E402

CFG = TrainConfig(
    epochs=1, batch_size=16, image_size=32, width=0.125, bn_momentum=0.1, mc_samples=2, threads=1, ensemble=2
)


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory):
    sets = make_synthetic(n_per_class=12, size=32, seed=0)
    return train_ensemble(sets, CFG, tmp_path_factory.mktemp("ens") / "e", progress=False), sets


def test_members_differ_and_manifest_is_complete(ensemble):
    from safetensors.torch import load_file

    out, _ = ensemble
    members = resolve_members(out)
    assert [m.name for m in members] == ["member-0", "member-1"]
    doc = json.loads((out / "ensemble.json").read_text())
    assert doc["format"] == ENSEMBLE_FORMAT and doc["seeds"] == [0, 1]
    assert set(doc["metrics"]["test"]) == {"derm", "scan"}
    assert set(doc["referral"]) == {"derm", "scan"}
    seeds = [read_card(m).training["config"]["seed"] for m in members]
    assert seeds == [0, 1]
    w0, w1 = (load_file(str(m / "model.safetensors")) for m in members)
    assert w0.keys() == w1.keys()
    assert any(not torch.equal(w0[k], w1[k]) for k in w0 if k.endswith("weight"))


def test_single_model_resolves_to_itself(ensemble):
    out, _ = ensemble
    member = out / "member-0"
    assert resolve_members(member) == [member]


def test_ensemble_needs_resume_to_overwrite(ensemble):
    out, sets = ensemble
    with pytest.raises(ConfigError, match="--resume"):
        train_ensemble(sets, CFG, out, progress=False)


@pytest.mark.parametrize(
    "manifest, message",
    [
        (None, "neither a model"),
        ("{not json", "not valid JSON"),
        ({"format": "other/1", "members": ["a"]}, "unsupported format"),
        ({"format": ENSEMBLE_FORMAT, "members": []}, "non-empty"),
        ({"format": ENSEMBLE_FORMAT, "members": ["../outside"]}, "outside"),
        ({"format": ENSEMBLE_FORMAT, "members": ["missing"]}, "has no model_card.json"),
    ],
)
def test_bad_manifests(tmp_path, manifest, message):
    if manifest is not None:
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        (tmp_path / "ensemble.json").write_text(text)
    with pytest.raises(ArtifactError, match=message):
        resolve_members(tmp_path)
