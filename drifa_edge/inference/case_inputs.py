"""One task's file -> model input, with the record of how it was read and its quality.

Channels: a file whose channel count differs from the card's (gray for an RGB task, RGB for
a gray one) is refused, because for a medical model a gray dermoscopy image usually means a
wrong file; it is converted (gray repeated to RGB, RGB to BT.601 luma) only when the card
lists that count in ``data["accepted_channels"][task]`` or the caller allows conversion
(``--convert-channels``). A gray image stored as RGB (channels equal; within
``readers.GRAY_RGB_TOLERANCE_JPEG`` for JPEG) *is* gray: a gray task takes it without a flag
(its first channel, or BT.601 luma for a lossy file), an RGB task takes it as stored, and
the record says so.

Input quality (:mod:`drifa_edge.data.quality`, limits from the card's preprocessing) is
checked on the decoded image; what happens to a failing case (refer or refuse) is the
caller's choice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from drifa_edge.artifact.card import ModelCard
from drifa_edge.data.preprocess import preprocess, to_channels
from drifa_edge.data.quality import check_quality
from drifa_edge.data.readers import decode_image
from drifa_edge.errors import BadInputError


@dataclass
class TaskInput:
    """Model input (C, S, S) of one task, how the file was read, and its quality problems."""

    array: np.ndarray
    read: dict[str, Any]
    quality_issues: list[str] = field(default_factory=list)
    conversion: str | None = None


def accepted_channels(card: ModelCard, task: str) -> set[int]:
    """Channel counts a task takes: its own, plus those the card's data section allows."""
    extra = (card.data.get("accepted_channels") or {}).get(task, [])
    return {card.preprocess[task].channels, *(int(c) for c in extra)}


def read_task_input(
    path: Path, task: str, card: ModelCard, allow_channel_conversion: bool = False
) -> TaskInput:
    """Read, channel-match, quality-check and preprocess one file for ``task``.

    Raises :class:`BadInputError` naming the task and the file."""
    spec = card.preprocess[task]
    try:
        decoded = decode_image(path)
    except BadInputError as e:
        raise BadInputError(f"{task}: {e}") from e
    image, info = decoded.pixels, decoded.info
    steps = list(info.steps)
    have, conversion = image.shape[-1], None
    if have == 3 and spec.channels == 1 and info.gray_as_rgb is not None:
        if info.gray_as_rgb == "exact":
            image = image[..., :1]
            steps.append("gray stored as RGB (channels equal): read as gray")
        else:
            image = to_channels(image, 1)
            steps.append(f"gray stored as RGB (channels {info.gray_as_rgb}): BT.601 luma")
    elif have != spec.channels:
        if not (allow_channel_conversion or have in accepted_channels(card, task)):
            raise BadInputError(
                f"{task}: {path}: {_channels(have)} image, the model takes {_channels(spec.channels)}; "
                "check that this is the right file, or pass --convert-channels to convert it"
            )
        conversion = f"{_channels(have)}->{_channels(spec.channels)}"
        steps.append(f"channels converted {conversion}")
    h, w = image.shape[:2]
    read = info.to_dict() | {"file": str(path), "width": w, "height": h, "steps": steps}
    issues = check_quality(image, spec.size, spec.quality)
    return TaskInput(preprocess(image, spec), read, issues, conversion)


def _channels(c: int) -> str:
    return {1: "gray", 3: "RGB"}.get(c, f"{c}-channel")
