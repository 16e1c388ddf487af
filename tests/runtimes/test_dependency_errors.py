"""Dependency errors say what really happened (issue 14: onnxruntime 1.18 under numpy 2 was
reported as "not installed", and the install hint lost its "[onnx]" to Rich markup)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from drifa_edge import errors
from drifa_edge.errors import missing_dependency

REPO = Path(__file__).resolve().parents[2]


def _raise(exc: BaseException):
    try:
        raise exc
    except ImportError:
        return missing_dependency("onnxruntime", "onnx")


def test_not_installed_names_the_extra() -> None:
    e = _raise(ModuleNotFoundError("No module named 'onnxruntime'", name="onnxruntime"))
    assert "is not installed" in str(e) and "pip install 'drifa-edge[onnx]'" in str(e)


def test_installed_but_broken_quotes_the_real_error_and_the_versions(monkeypatch) -> None:
    versions = {"onnxruntime": "1.18.0", "numpy": "2.1.3"}
    monkeypatch.setattr(errors, "_version", lambda name: versions.get(name, "?"))
    e = _raise(ImportError(""))  # what onnxruntime 1.18.0 raises under numpy 2
    text = str(e)
    assert "not installed" not in text
    assert "installed: onnxruntime 1.18.0, numpy 2.1.3" in text
    assert "built for numpy 1.x" in text and "onnxruntime>=1.19" in text
    sub = _raise(ModuleNotFoundError("No module named 'coloredlogs'", name="coloredlogs"))
    assert "fails to import (ModuleNotFoundError: No module named 'coloredlogs')" in str(sub)


def test_pyproject_lower_bounds_run_under_numpy_2() -> None:
    text = (REPO / "pyproject.toml").read_text()
    for package, minimum in errors.NUMPY2_MINIMUM.items():
        found = re.findall(rf'"{package}>=([0-9.]+)', text)
        for bound in found:
            assert not errors._older(bound, minimum), f"{package}>={bound} admits a numpy-1-only build"


BLOCK_ORT = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "onnxruntime" or name.startswith("onnxruntime."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Block())
from drifa_edge.cli import main
sys.argv = ["drifa-edge", *sys.argv[1:]]
main()
"""


def test_cli_prints_the_extra_literally(tiny_artifacts) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", BLOCK_ORT, "predict", str(tiny_artifacts[1]), "--runtime", "onnxruntime",
         "-i", "derm=x.png", "-i", "xray=y.png"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "300"},
    )  # fmt: skip
    assert proc.returncode == 4, proc.stderr[-2000:]
    assert "pip install 'drifa-edge[onnx]'" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_minimum_onnxruntime_with_the_numpy_pip_picks_runs_predict(tiny_artifacts, tmp_path) -> None:
    """Slow (~1-2 min, downloads ~20 MB): a fresh venv with onnxruntime at pyproject's lower
    bound and whatever numpy pip resolves with it, no torch, runs `drifa-edge predict`."""
    bound = re.search(r'"onnxruntime>=([0-9.]+)"', (REPO / "pyproject.toml").read_text()).group(1)
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    pip = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", f"onnxruntime=={bound}", "numpy>=1.24", "pillow>=10", "typer>=0.12", "rich>=13"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    if pip.returncode != 0:
        pytest.skip(f"cannot install onnxruntime=={bound} here: {pip.stderr[-300:]}")
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(tmp_path / "d.png")
    Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8)).save(tmp_path / "x.png")
    proc = subprocess.run(
        [str(py), "-c", "from drifa_edge.cli import main; main()", "predict", str(tiny_artifacts[1]),
         "--runtime", "onnxruntime", "-T", "3", "-i", f"derm={tmp_path / 'd.png'}", "-i", f"xray={tmp_path / 'x.png'}"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("{")))
    assert record["status"] == "ok"
