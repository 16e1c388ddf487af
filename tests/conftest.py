"""Shared test fixtures (keep generic: every test folder may use them)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def shared_data_root() -> Path:
    """The shared real data: $DRIFA_SHARED_DATA, else ../shared/data beside the repository."""
    env = os.environ.get("DRIFA_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of the shared real data; the test is skipped when it is absent."""
    root = shared_data_root()
    if not root.is_dir():
        pytest.skip(f"shared real data not found at {root} (set DRIFA_SHARED_DATA)")
    return root
