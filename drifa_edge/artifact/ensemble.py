"""How an artifact folder names its ensemble members.

An artifact folder is either one member (it holds ``model_card.json``) or an
ensemble: ``ensemble.json`` lists member folders relative to it. Member k is
trained with seed ``seed + k`` into ``member-k/`` (``drifa_edge.training.ensemble``);
at inference every member contributes T MC samples per case (K*T in all).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from drifa_edge.artifact.atomic import atomic_write
from drifa_edge.artifact.card import CARD_FILE, ReferralRule
from drifa_edge.errors import ArtifactError

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
    return atomic_write(out / ENSEMBLE_FILE, json.dumps(doc, indent=2, sort_keys=True))


def ensemble_referral(path: str | Path) -> dict[str, ReferralRule]:
    """The referral rules an ensemble fitted on its own K*T samples (``ensemble.json``'s
    ``referral`` section); empty for a single model or an ensemble without them."""
    manifest = Path(path) / ENSEMBLE_FILE
    if not manifest.is_file():
        return {}
    try:
        fitted = json.loads(manifest.read_text()).get("referral") or {}
        return {task: ReferralRule(**rule) for task, rule in fitted.items()}
    except (json.JSONDecodeError, TypeError, AttributeError) as e:
        raise ArtifactError(f"{manifest}: unreadable 'referral' section ({e})") from e
