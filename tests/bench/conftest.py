"""A tiny DRIFA-Net checkpoint (width 0.125, 32 px) shared by the bench tests.

Its tasks are those of the built-in synthetic data (``--data synthetic``), so the
accuracy / calibration / drift-gate path runs without files."""

from __future__ import annotations

from pathlib import Path

import pytest

SYNTHETIC_TASKS = (("derm", ("blob", "ring", "cross"), 3), ("scan", ("stripes", "checker", "spots"), 1))


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_checkpoint_factory, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint_factory(tmp_path_factory.mktemp("bench") / "ckpt", SYNTHETIC_TASKS)


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker subprocesses inherit this: tests share a small machine."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
