"""Deep ensembles of DRIFA-Nets, and how an artifact folder names its members.

An artifact folder is either one member (it holds ``model_card.json``) or an
ensemble: ``ensemble.json`` lists member folders relative to it. Member k is
trained with seed ``seed + k`` into ``member-k/``; at inference every member
contributes T MC samples per case (K*T in all, see ``inference.engine``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from drifa_edge.card import CARD_FILE
from drifa_edge.errors import ArtifactError, ConfigError
from drifa_edge.training.config import TrainConfig

log = logging.getLogger(__name__)

ENSEMBLE_FILE = "ensemble.json"
ENSEMBLE_FORMAT = "drifa-edge-ensemble/1"


def member_dir(k: int) -> str:
    return f"member-{k}"


def resolve_members(path: str | Path) -> list[Path]:
    """The member folders of an artifact: ``[path]`` for a single model, else those of ``ensemble.json``."""
    path = Path(path)
    if (path / CARD_FILE).is_file():
        return [path]
    manifest = path / ENSEMBLE_FILE
    if not manifest.is_file():
        raise ArtifactError(
            f"{path}: neither a model ({CARD_FILE}) nor an ensemble ({ENSEMBLE_FILE}); pass a folder "
            "written by 'drifa-edge train' or 'drifa-edge export'"
        )
    try:
        doc = json.loads(manifest.read_text())
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{manifest}: not valid JSON ({e})") from e
    if doc.get("format") != ENSEMBLE_FORMAT:
        raise ArtifactError(
            f"{manifest}: unsupported format {doc.get('format')!r}; expected {ENSEMBLE_FORMAT!r}"
        )
    members = doc.get("members")
    if not isinstance(members, list) or not members:
        raise ArtifactError(f"{manifest}: 'members' must be a non-empty list of folders")
    out = []
    for rel in members:
        p = (path / rel).resolve()
        if path.resolve() not in p.parents:
            raise ArtifactError(f"{manifest}: member {rel!r} lies outside the ensemble folder")
        if not (p / CARD_FILE).is_file():
            raise ArtifactError(
                f"{manifest}: member {rel!r} has no {CARD_FILE} (incomplete training or copy?)"
            )
        out.append(path / rel)
    return out


def write_manifest(out: Path, members: list[str], extra: dict[str, Any] | None = None) -> Path:
    doc = {"format": ENSEMBLE_FORMAT, "members": members, **(extra or {})}
    tmp = out / (ENSEMBLE_FILE + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=True))
    tmp.replace(out / ENSEMBLE_FILE)
    return out / ENSEMBLE_FILE


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
        log.info("ensemble member %d/%d (seed %d)", k + 1, cfg.ensemble, cfg.seed + k)
        member = cfg.replace(seed=cfg.seed + k)
        train_on(data, member, out / name, resume=resume, progress=progress)
    evaluation = evaluate_members([out / n for n in names], data, cfg)
    write_manifest(
        out,
        names,
        {"seeds": [cfg.seed + k for k in range(cfg.ensemble)], "training": cfg.to_dict(), **evaluation},
    )
    return out
