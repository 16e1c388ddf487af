"""Fixtures of the Ray tests: one real local Ray for the session, tiny models and cases.

The local Ray has 2 CPUs (this machine's), an object store of 128 MiB and its
session files under a short /tmp folder: containers often have a small /dev/shm,
and Ray's socket paths must stay under 107 characters. Actors reserve fractions
of a CPU so decode tasks can still be scheduled beside them.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "inference"))  # inference_helpers

from inference_helpers import make_checkpoint  # noqa: E402

OBJECT_STORE_MB = 128


@pytest.fixture(scope="session")
def ray_local():
    """A real single-node Ray (num_cpus=2) shared by the session's tests."""
    ray = pytest.importorskip("ray", reason="Ray tests need the [ray] extra: pip install 'drifa-edge[ray]'")
    pytest.importorskip("ray.data")
    folder = tempfile.mkdtemp(prefix="drifa-ray-", dir="/tmp")
    if ray.is_initialized():
        ray.shutdown()
    ray.init(
        num_cpus=2,
        object_store_memory=OBJECT_STORE_MB * 2**20,
        _temp_dir=folder,
        include_dashboard=False,
        logging_level="WARNING",
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.hookimpl(trylast=True)  # after the test's own fixtures (serve.shutdown) are torn down
def pytest_runtest_teardown(item, nextitem):
    """Shut the session's Ray down after the last test of this folder, so the rest of the
    default run does not share the machine with Ray's idle processes (the fixture's own
    teardown only comes at the end of the session)."""
    here = Path(__file__).resolve().parent
    if nextitem is not None and Path(nextitem.path).resolve().is_relative_to(here):
        return
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny two-task checkpoint (derm RGB 3 classes, blood gray 2 classes)."""
    pytest.importorskip("torch")
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "model")


@pytest.fixture(scope="session")
def ood_checkpoint(checkpoint, tmp_path_factory) -> Path:
    """The tiny checkpoint with a hand-made ood.npz: every blood case OOD, no derm case (T = 4)."""
    from scaleout_helpers import write_test_ood

    folder = tmp_path_factory.mktemp("ood") / "model"
    shutil.copytree(checkpoint, folder)
    write_test_ood(folder, {"derm": 1e30, "blood": 0.0}, samples=4)
    return folder
