"""Resumable state without pickle: optimizer flattening, hashes, config checks."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from drifa_edge.errors import ArtifactError, ConfigError  # noqa: E402
from drifa_edge.training.state import (  # noqa: E402
    RunState,
    check_resumable,
    flatten_optimizer,
    load_state,
    save_state,
    unflatten_optimizer,
)


def _setup(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.2, patience=1, min_lr=1e-5)
    return model, opt, sched


def _step(model, opt, sched, n: int = 3):
    model.train()
    for i in range(n):
        opt.zero_grad()
        model(torch.randn(8, 4)).pow(2).mean().backward()
        opt.step()
        sched.step(1.0 + i * 0.0)  # constant loss: the plateau counter moves and the LR drops


def test_optimizer_round_trip():
    model, opt, sched = _setup()
    _step(model, opt, sched)
    tensors, plain = flatten_optimizer(opt)
    assert all(torch.is_tensor(t) for t in tensors.values())
    json.dumps(plain)  # the non-tensor part is plain JSON
    restored = unflatten_optimizer(tensors, json.loads(json.dumps(plain)))
    original = opt.state_dict()
    assert restored["state"].keys() == original["state"].keys()
    for pid, entries in original["state"].items():
        for name, value in entries.items():
            assert torch.equal(restored["state"][pid][name], value)


def test_save_and_load_continue_identically(tmp_path):
    model, opt, sched = _setup()
    _step(model, opt, sched)
    run = RunState(epoch=3, best_val_loss=0.5, best_epoch=2, bad_epochs=1, history=[{"epoch": 1}])
    config = {"lr": 1e-2, "epochs": 5}
    save_state(tmp_path, model, opt, sched, run, config)
    assert not list(tmp_path.glob("*.pkl")) and not list(tmp_path.glob("*.pt"))
    saved_schedule = sched.state_dict()
    _step(model, opt, sched, 2)  # the uninterrupted run goes on (drawing from the saved RNG state)

    model2, opt2, sched2 = _setup(seed=1)  # other initial weights, fresh optimizer, other RNG
    loaded = load_state(tmp_path, model2, opt2, sched2, {"lr": 1e-2, "epochs": 9})  # epochs may change
    assert loaded == run
    assert sched2.state_dict() == saved_schedule
    # the resumed run makes the same 2 steps: optimizer moments, LR schedule and RNG were restored
    _step(model2, opt2, sched2, 2)
    for a, b in zip(model.state_dict().values(), model2.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_torn_write_is_refused(tmp_path):
    model, opt, sched = _setup()
    save_state(tmp_path, model, opt, sched, RunState(), {})
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ArtifactError, match="does not match state.json"):
        load_state(tmp_path, *_setup(), {})


def test_changed_options_are_refused(tmp_path):
    check_resumable({"lr": 1e-3, "epochs": 5}, {"lr": 1e-3, "epochs": 50}, tmp_path)
    with pytest.raises(ConfigError, match="width"):
        check_resumable({"width": 0.25, "epochs": 5}, {"width": 0.5, "epochs": 5}, tmp_path)
