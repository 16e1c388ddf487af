"""Shared test fixtures (keep generic: every test folder may use them)."""

from __future__ import annotations

import os
import subprocess
import sys
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


def run_cli(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """``drifa-edge ARGS`` in a fresh interpreter with stdout and stderr piped (not a terminal),
    as a script, a CI job or ``> log`` sees it; 80 columns, one thread."""
    full_env = dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="80", **(env or {}))
    full_env.pop("FORCE_COLOR", None)
    return subprocess.run(
        [sys.executable, "-m", "drifa_edge", *map(str, args)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )


@pytest.fixture
def cli():
    """:func:`run_cli` as a fixture, for test folders that cannot import conftest."""
    return run_cli
