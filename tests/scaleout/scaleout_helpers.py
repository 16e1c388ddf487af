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


def write_test_ood(folder: Path, thresholds: dict[str, float], samples: int) -> None:
    """An ``ood.npz`` in ``folder`` by hand (no fit): per task one class mean at 0 and an identity
    precision over the task's branch columns, so a case's score is the squared norm of its
    MC-mean branch features (> 0); a threshold of 0 flags every case, 1e30 none."""
    import numpy as np

    from drifa_edge.artifact.card import read_card
    from drifa_edge.artifact.ood import TaskDensity, write_ood
    from drifa_edge.export.ood import task_columns

    card = read_card(folder, verify=False)
    densities = {}
    for task, threshold in thresholds.items():
        start, stop = task_columns(card, task, "branch")
        d = stop - start
        densities[task] = TaskDensity(
            "branch", (start, stop), np.array([0]), np.zeros((1, d)), np.eye(d), threshold, 0.05,
            {"samples": samples, "note": "hand-made for the tests"},
        )  # fmt: skip
    write_ood(folder, densities)
