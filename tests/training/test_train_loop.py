"""Training end to end on the synthetic set: learning, checkpoints, hashes, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from drifa_edge.artifact.card import read_card  # noqa: E402
from drifa_edge.artifact.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from drifa_edge.data.synthetic import make_synthetic  # noqa: E402
from drifa_edge.errors import ArtifactError, ConfigError  # noqa: E402
from drifa_edge.inference.engine import EngineConfig, run_mc_logits, softmax  # noqa: E402
from drifa_edge.model.dropout import set_dropout_mode  # noqa: E402
from drifa_edge.runtimes.base import open_runtime  # noqa: E402
from drifa_edge.training.config import TrainConfig  # noqa: E402
from drifa_edge.training.data import prepare_data  # noqa: E402
from drifa_edge.training.loop import train  # noqa: E402

# Small enough for ~10 s on one thread, large enough to learn the synthetic shapes/textures.
TINY = TrainConfig(
    epochs=8,
    batch_size=16,
    lr=3e-3,
    image_size=32,
    width=0.125,
    bn_momentum=0.1,
    early_stopping_patience=None,
    mc_samples=4,
    threads=1,
)


@pytest.fixture(scope="module")
def sets():
    return make_synthetic(n_per_class=60, size=32, seed=0)


@pytest.fixture(scope="module")
def trained(sets, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "ckpt"
    return train(sets, TINY, out, progress=False)


def test_training_lowers_the_loss_and_beats_chance(trained, sets):
    card = read_card(trained)
    history = card.training["history"]
    assert len(history) == TINY.epochs
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert card.training["best_val_loss"] == min(h["val_loss"] for h in history)
    test = card.metrics["test"]
    chance = 1 / 3  # three balanced classes per synthetic task
    assert all(m["accuracy"] > chance for m in test.values())
    assert np.mean([m["accuracy"] for m in test.values()]) >= 0.5
    for task, m in test.items():  # every test case scored exactly once
        assert m["cases"] == len(sets[task].subset("test").samples)


def test_card_records_everything(trained, sets):
    card = read_card(trained)
    assert card.task_names == ("derm", "scan")
    assert card.model.tasks[0].classes == tuple(sets["derm"].classes)
    assert [t.channels for t in card.model.tasks] == [3, 1]  # the gray synthetic task gets 1 channel
    assert card.preprocess["scan"].mean == (0.5,) and card.preprocess["derm"].std == (0.5,) * 3
    assert card.training["config"] == TINY.to_dict()
    assert card.training["status"] == "finished"
    assert card.data["sets"]["derm"]["fingerprint"] == sets["derm"].fingerprint()
    for task in card.task_names:
        assert card.temperature_of(task) > 0
        rule = card.referral[task]
        assert rule.metric == "mutual_information" and np.isfinite(rule.threshold)
        assert rule.target_rate == TINY.referral_rate


def test_card_metrics_match_an_independent_computation(trained, sets):
    """Recompute test accuracy from raw engine logits with numpy and compare to the card."""
    card = read_card(trained)
    data = prepare_data(sets, TINY)
    xs, ys = data.eval_rows("test")
    runtime = open_runtime("torch", trained)
    logits = run_mc_logits([runtime], xs, EngineConfig(samples=TINY.mc_samples, seed=TINY.seed))
    for k, task in enumerate(card.task_names):
        keep = ys[k] >= 0
        probs = softmax(logits[task][keep], card.temperature_of(task)).mean(axis=1)
        accuracy = float(np.mean(probs.argmax(axis=1) == ys[k][keep]))
        assert accuracy == pytest.approx(card.metrics["test"][task]["accuracy"], abs=1e-12)


def test_checkpoint_round_trip_is_exact(trained, tmp_path):
    model, card = load_checkpoint(trained)
    save_checkpoint(model, card, tmp_path / "copy")
    again, card2 = load_checkpoint(tmp_path / "copy")
    assert card2.model == card.model and card2.preprocess == card.preprocess
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(3, t.channels, 32, 32, generator=g) for t in card.model.tasks]
    for m in (model, again):
        m.eval()
        set_dropout_mode(m, "off")
    with torch.no_grad():
        for a, b in zip(model(xs), again(xs), strict=True):
            assert torch.equal(a, b)


def test_tampered_weights_are_refused(trained, tmp_path):
    import shutil

    copy = tmp_path / "tampered"
    shutil.copytree(trained, copy)
    weights = copy / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-10] ^= 0xFF
    weights.write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match="sha256"):
        load_checkpoint(copy)
    with pytest.raises(ArtifactError, match="sha256"):
        open_runtime("torch", copy)


def test_existing_run_needs_resume(trained, sets):
    with pytest.raises(ConfigError, match="--resume"):
        train(sets, TINY, trained, progress=False)


def _weights(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "last" / "model.safetensors"))


def test_resume_continues_exactly(tmp_path):
    small = make_synthetic(n_per_class=20, size=32, seed=0)
    cfg = TINY.replace(epochs=2, mc_samples=2)
    straight = train(small, cfg, tmp_path / "straight", progress=False)
    part = train(small, cfg.replace(epochs=1), tmp_path / "resumed", progress=False)
    assert len(read_card(part).training["history"]) == 1
    resumed = train(small, cfg, tmp_path / "resumed", resume=True, progress=False)
    card_a, card_b = read_card(straight), read_card(resumed)
    assert card_b.training["epochs_run"] == card_a.training["epochs_run"] == 2
    # reseeding per epoch makes the resumed run follow the uninterrupted one exactly (1 thread, CPU)
    wa, wb = _weights(straight), _weights(resumed)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert [h["val_loss"] for h in card_a.training["history"]] == [
        h["val_loss"] for h in card_b.training["history"]
    ]


def test_resuming_a_finished_run_changes_nothing(trained, sets):
    before = {p.name: p.read_bytes() for p in trained.iterdir() if p.is_file()}
    state = json.loads((trained / "last" / "state.json").read_text())
    assert state["run"]["evaluated"]
    train(sets, TINY, trained, resume=True, progress=False)
    after = {p.name: p.read_bytes() for p in trained.iterdir() if p.is_file()}
    assert before == after


def test_resume_refuses_other_options(trained, sets):
    with pytest.raises(ConfigError, match="lr"):
        train(sets, TINY.replace(lr=1e-2), trained, resume=True, progress=False)
