"""What the INT8 builds of both backends share: the build key and the card record.

A build is keyed by what it depends on (the sha256 of the FP32 graphs it was made from,
the calibration set's digest and every setting), recorded in the model card under
``export.int8.<section>`` with the hashes of the files it wrote. An export with the same
key and intact files is reused; anything else rebuilds.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from drifa_edge.artifact import layout
from drifa_edge.quantize.calibration_set import CalibrationSet
from drifa_edge.quantize.config import QuantizeConfig

log = logging.getLogger(__name__)


def build_key(card: Any, calib: CalibrationSet, config: QuantizeConfig, fp32_files: Sequence[str]) -> str:
    """sha256 over the FP32 graphs' hashes, the calibration data and the settings."""
    fp32 = {rel: card.files.get(rel) for rel in fp32_files}
    blob = json.dumps({"fp32": fp32, "calibration": calib.digest, "config": config.to_dict()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def reusable(root: Path, card: Any, section: str, key: str, int8_files: Sequence[str]) -> bool:
    """The card records a build with ``key`` and its files are there, unmodified."""
    if card.export.get("int8", {}).get(section, {}).get("key") != key:
        return False
    try:
        layout.verified_card(root, list(int8_files))
    except Exception as e:  # a missing or modified file means: rebuild
        log.info("INT8 build in %s not reusable: %s", root, e)
        return False
    return True


def record(
    root: Path, card: Any, section: str, entry: dict[str, Any], int8_files: Sequence[str]
) -> dict[str, Any]:
    """Store a new build's record in the card (hashing its files); returns it, marked not reused."""
    int8 = dict(card.export.get("int8", {}))
    int8[section] = entry
    layout.update_card(root, {"int8": int8}, hash_files=list(int8_files))
    return {**entry, "reused": False}
