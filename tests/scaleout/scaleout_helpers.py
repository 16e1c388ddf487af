"""Helpers for the scale-out tests (a module of its own: test modules cannot import
``conftest`` reliably, as pytest loads several conftest.py files under one name)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "inference"))  # inference_helpers

from inference_helpers import write_good_case, write_manifest  # noqa: E402

TASKS = ("derm", "blood")


def good_manifest(folder: Path, n: int, name: str = "cases.csv") -> Path:
    rows = []
    for i in range(n):
        derm, blood = write_good_case(folder, f"g{i}", seed=i)
        rows.append((f"g{i}", derm.name, blood.name))
    return write_manifest(folder / name, rows)
