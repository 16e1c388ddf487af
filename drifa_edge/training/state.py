"""Resumable training state in ``<run>/last/``: safetensors + JSON, no pickle.

- ``model.safetensors``: the model's state dict after the epoch;
- ``optimizer.safetensors``: every tensor of the optimizer state, flattened to
  ``state.<param index>.<name>`` keys, and the torch RNG state (``rng.torch``);
- ``state.json``: epoch, history, best val loss, early-stopping counter, the
  optimizer's non-tensor state and param groups, the LR scheduler's state, the
  training config and the sha256 of both weight files. It is written last, so a
  crash mid-write leaves files whose hashes do not match and is refused.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from drifa_edge.artifact.atomic import atomic_replace, atomic_write, temporary_path
from drifa_edge.artifact.card import sha256_file
from drifa_edge.errors import ArtifactError, ConfigError

LAST_DIR = "last"
STATE_FORMAT = "drifa-edge-train-state/1"
# options that may differ when a run is resumed (they do not change what was learned so far)
RESUMABLE_CHANGES = (
    "epochs",
    "threads",
    "mc_samples",
    "referral_rate",
    "early_stopping_patience",
    "ensemble",
)


@dataclass
class RunState:
    epoch: int = 0  # epochs completed
    best_val_loss: float = math.inf
    best_epoch: int = -1
    bad_epochs: int = 0  # epochs since the best val loss (early stopping)
    stopped_early: bool = False
    evaluated: bool = False  # final MC evaluation written into the card
    history: list[dict[str, Any]] = field(default_factory=list)

    def finished(self, epochs: int) -> bool:
        return self.stopped_early or self.epoch >= epochs


def _atomic_save(tensors: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    tmp = temporary_path(path)
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
    atomic_replace(tmp, path)


def flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state dict into tensors (safetensors) and plain values (JSON)."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, entries in sd["state"].items():
        for name, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"state.{pid}.{name}"] = value
            else:
                scalars.setdefault(str(pid), {})[name] = value
    return tensors, {"scalars": scalars, "param_groups": sd["param_groups"]}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], plain: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if not key.startswith("state."):
            continue
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = value
    for pid, entries in plain["scalars"].items():
        state.setdefault(int(pid), {}).update(entries)
    return {"state": state, "param_groups": plain["param_groups"]}


def save_state(folder: Path, model, optimizer, scheduler, run: RunState, config: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    _atomic_save(model.state_dict(), folder / "model.safetensors")
    opt_tensors, opt_plain = flatten_optimizer(optimizer)
    opt_tensors["rng.torch"] = torch.get_rng_state()
    _atomic_save(opt_tensors, folder / "optimizer.safetensors")
    doc = {
        "format": STATE_FORMAT,
        "run": asdict(run),
        "optimizer": opt_plain,
        "scheduler": scheduler.state_dict(),
        "config": config,
        "files": {f: sha256_file(folder / f) for f in ("model.safetensors", "optimizer.safetensors")},
    }
    atomic_write(folder / "state.json", json.dumps(doc, indent=1))


def check_resumable(saved: dict[str, Any], current: dict[str, Any], folder: Path) -> None:
    """Refuse to resume with options that would change what was already learned."""
    changed = sorted(
        k for k in set(saved) | set(current) if k not in RESUMABLE_CHANGES and saved.get(k) != current.get(k)
    )
    if changed:
        diffs = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in changed)
        raise ConfigError(
            f"cannot resume {folder}: the run was trained with other options ({diffs}); "
            f"use the same options (only {', '.join(RESUMABLE_CHANGES)} may change) or a new --out"
        )


def load_state(folder: Path, model, optimizer, scheduler, config: dict[str, Any]) -> RunState:
    """Restore model, optimizer, scheduler and torch RNG from ``folder``; return the run state."""
    from safetensors.torch import load_file

    path = folder / "state.json"
    if not path.is_file():
        raise ArtifactError(f"{folder}: no state.json; this run cannot be resumed, start it again")
    doc = json.loads(path.read_text())
    if doc.get("format") != STATE_FORMAT:
        raise ArtifactError(f"{path}: unsupported training state format {doc.get('format')!r}")
    for name, digest in doc["files"].items():
        if not (folder / name).is_file() or sha256_file(folder / name) != digest:
            raise ArtifactError(
                f"{folder / name}: missing or does not match state.json (interrupted while saving?); "
                "the run cannot be resumed from it"
            )
    check_resumable(doc["config"], config, folder)
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    opt_tensors = load_file(str(folder / "optimizer.safetensors"))
    optimizer.load_state_dict(unflatten_optimizer(opt_tensors, doc["optimizer"]))
    scheduler.load_state_dict(doc["scheduler"])
    torch.set_rng_state(opt_tensors["rng.torch"])
    return RunState(**doc["run"])
