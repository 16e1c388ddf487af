"""Deep ensembles of DRIFA-Nets: member k is trained with seed ``seed + k`` into
``member-k/`` and ``ensemble.json`` lists them (the folder layout is
:mod:`drifa_edge.artifact.ensemble`); at inference every member contributes T MC
samples per case (K*T in all, see ``inference.engine``).
"""

from __future__ import annotations

from pathlib import Path

from drifa_edge._moved import forward
from drifa_edge.artifact.ensemble import ENSEMBLE_FILE, member_dir, write_manifest
from drifa_edge.errors import ConfigError
from drifa_edge.progress import stage
from drifa_edge.training.config import TrainConfig

# resolve_members, ENSEMBLE_FORMAT: moved to drifa_edge.artifact.ensemble (warns; goes next release)
__getattr__ = forward("drifa_edge.training.ensemble", "drifa_edge.artifact.ensemble")


def train_ensemble(
    sets: dict, cfg: TrainConfig, out: str | Path, resume: bool = False, progress: bool = True
) -> Path:
    """Train ``cfg.ensemble`` members (seeds seed + k) into ``out/member-k``, evaluate the
    ensemble with MC dropout and write ``out/ensemble.json``. With K = 1 the single model
    is trained directly into ``out`` (no manifest)."""
    from drifa_edge.training.data import prepare_data
    from drifa_edge.training.evaluate import evaluate_members
    from drifa_edge.training.loop import train, train_on

    out = Path(out)
    if cfg.ensemble == 1:
        return train(sets, cfg, out, resume=resume, progress=progress)
    if (out / ENSEMBLE_FILE).exists() and not resume:
        raise ConfigError(f"--out {out} already holds an ensemble; pass --resume or choose a new folder")
    names = [member_dir(k) for k in range(cfg.ensemble)]
    data = prepare_data(sets, cfg, progress=progress)
    for k, name in enumerate(names):
        stage(f"ensemble member {k + 1} of {cfg.ensemble} (seed {cfg.seed + k})")
        member = cfg.replace(seed=cfg.seed + k)
        train_on(data, member, out / name, resume=resume, progress=progress)
    evaluation = evaluate_members([out / n for n in names], data, cfg)
    write_manifest(
        out,
        names,
        {"seeds": [cfg.seed + k for k in range(cfg.ensemble)], "training": cfg.to_dict(), **evaluation},
    )
    return out
