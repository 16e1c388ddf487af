"""Refuse to export a checkpoint whose model card flags a task at chance.

Training tests every task's validation predictions against chance
(``drifa_edge.training.chance``) and writes the verdict into the card's
``training.chance`` section. A model at chance answers confidently and wrongly,
the worst outcome for a clinical tool, so export stops unless the user forces it.
Cards written before the test existed carry no verdict and pass.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from drifa_edge.artifact.card import read_card
from drifa_edge.errors import UntrustedModelError

log = logging.getLogger(__name__)


def tasks_at_chance(member: Path) -> list[str]:
    """Tasks that ``member``'s card flags at chance (empty for an older card)."""
    chance = read_card(member, verify=False).training.get("chance") or {}
    return list(chance.get("at_chance") or [])


def check_not_at_chance(members: Sequence[Path], force: bool = False) -> None:
    """Raise :class:`UntrustedModelError` when any member's card flags a task at chance;
    with ``force`` log a warning instead."""
    flagged = {str(m): tasks for m in members if (tasks := tasks_at_chance(Path(m)))}
    if not flagged:
        return
    where = "; ".join(f"{m}: {', '.join(t)}" for m, t in flagged.items())
    if force:
        log.warning("exporting a model flagged at chance (--force): %s", where)
        return
    raise UntrustedModelError(
        f"the model card flags task(s) at chance on validation ({where}): the model has not learned "
        "them and would answer confidently at random. Retrain (see the warning 'drifa-edge train' "
        "printed), or pass --force to export it anyway (e.g. for a pipeline test)"
    )
