"""Shared test fixtures (keep generic: every test folder may use them)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_model import make_tiny_checkpoint


def shared_data_root() -> Path:
    """The shared real data: $DRIFA_SHARED_DATA, else ../shared/data beside the repository."""
    env = os.environ.get("DRIFA_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def _model_cache_in_tmp(tmp_path_factory):
    """OpenVINO's model cache is on by default (predict, serve): keep the tests' blobs out of the
    user's ~/.cache (subprocesses inherit the variable)."""
    from drifa_edge.runtimes.model_cache import CACHE_ENV

    old = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(tmp_path_factory.mktemp("ov-cache"))
    yield
    if old is None:
        os.environ.pop(CACHE_ENV, None)
    else:
        os.environ[CACHE_ENV] = old


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of the shared real data; the test is skipped when it is absent."""
    root = shared_data_root()
    if not root.is_dir():
        pytest.skip(f"shared real data not found at {root} (set DRIFA_SHARED_DATA)")
    return root


# ---------------------------------------------------------------- the one tiny DRIFA-Net


@pytest.fixture(scope="session")
def tiny_checkpoint_factory():
    """:func:`tiny_model.make_tiny_checkpoint`: every test folder builds its tiny checkpoints
    with it (its own task names and tweaks as arguments) instead of a copy of the recipe."""
    return make_tiny_checkpoint


# ---------------------------------------------------------------- a tiny checkpoint and its export
# (tests/export, tests/cli; tests/bench overrides tiny_checkpoint with the synthetic set's tasks)

EXPORT_TASKS = (("derm", ("nevus", "melanoma", "keratosis"), 3), ("xray", ("normal", "pneumonia"), 1))


@pytest.fixture
def checkpoint_builder(tiny_checkpoint_factory):
    """The tiny checkpoint of these tests, for a variant (other seed, dropout rate)."""

    def build(folder: Path, seed: int = 0, dropout: float = 0.25) -> Path:
        return tiny_checkpoint_factory(
            folder, EXPORT_TASKS, seed=seed, dropout=dropout, randomize_bn=True, temperature={"derm": 1.5}
        )

    return build


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_checkpoint_factory, tmp_path_factory) -> Path:
    return tiny_checkpoint_factory(
        tmp_path_factory.mktemp("tiny") / "checkpoint",
        EXPORT_TASKS,
        randomize_bn=True,
        temperature={"derm": 1.5},
    )


@pytest.fixture(scope="session")
def checked_export(tiny_checkpoint, tmp_path_factory):
    """``export_all`` with every check on (ONNX Runtime and OpenVINO): (checkpoint, out, result)."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    from drifa_edge.export import export_all
    from drifa_edge.export.checks import CheckConfig

    out = tmp_path_factory.mktemp("export") / "out"
    result = export_all(tiny_checkpoint, out, openvino=True, check_config=CheckConfig(cases=4, samples=200))
    return tiny_checkpoint, out, result


# ---------------------------------------------------------------- the CLI as a script sees it


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
