"""The wheel carries what an installed drifa-edge needs, without the repository.

Builds the wheel (``pip wheel . --no-deps``), installs it with its base dependencies
into a fresh virtual environment outside the repository (no system site-packages,
no PYTHONPATH) and loads the named drift policy and a target profile there; about
a minute, most of it pip. The demo from that install (with the ``[all]`` extras) is
the ``slow`` test.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NETWORK_HINTS = ("No matching distribution", "Could not find a version", "connection", "Connection")


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _pip(python: Path, *args: str, cwd: Path) -> None:
    proc = subprocess.run(
        [str(python), "-m", "pip", *args], capture_output=True, text=True, cwd=cwd, env=_clean_env()
    )
    if proc.returncode:
        if any(h in proc.stderr for h in NETWORK_HINTS):
            pytest.skip(f"pip cannot fetch dependencies here: {proc.stderr.strip().splitlines()[-1]}")
        raise AssertionError(f"pip {' '.join(args)} failed:\n{proc.stderr[-3000:]}")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    _pip(Path(sys.executable), "wheel", str(REPO), "--no-deps", "-q", "-w", str(out), cwd=out)
    (built,) = out.glob("drifa_edge-*.whl")
    return built


def _venv(folder: Path) -> Path:
    venv.EnvBuilder(with_pip=True, system_site_packages=False, clear=True).create(folder)
    return folder / ("Scripts" if os.name == "nt" else "bin") / "python"


def _run(python: Path, code: str, cwd: Path) -> str:
    proc = subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, cwd=cwd, env=_clean_env()
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_wheel_ships_the_profiles(wheel, tmp_path):
    python = _venv(tmp_path / "venv")
    _pip(python, "install", "-q", str(wheel), cwd=tmp_path)
    out = _run(
        python,
        "import drifa_edge, json\n"
        "from drifa_edge.drift.policy import load_policy\n"
        "from drifa_edge.export.tensorrt import load_profile\n"
        "from drifa_edge.profiles import profile_names\n"
        "print(json.dumps({'file': drifa_edge.__file__, 'policy': load_policy('strict-clinical').name,\n"
        "  'rows_max': load_profile('desktop-cuda').rows_max, 'recipes': profile_names('train')}))",
        cwd=tmp_path,
    )
    import json

    got = json.loads(out)
    assert not Path(got["file"]).is_relative_to(REPO), "imported the repository, not the installed wheel"
    assert got["policy"] == "strict-clinical"
    assert got["rows_max"] == 240  # desktop-cuda.toml, [tensorrt] rows_max
    assert set(got["recipes"]) == {p.stem for p in (REPO / "train").glob("*.toml")}


@pytest.mark.slow
def test_demo_runs_from_the_installed_wheel(wheel, tmp_path):
    """The whole demo from a wheel install with the CPU extras (downloads torch: minutes)."""
    python = _venv(tmp_path / "venv")
    _pip(python, "install", "-q", "-c", str(REPO / "constraints.txt"), f"{wheel}[all]", cwd=tmp_path)
    cli = python.parent / "drifa-edge"
    proc = subprocess.run(
        [str(cli), "demo", "--out", str(tmp_path / "demo"), "--epochs", "2", "--samples", "8"],
        capture_output=True, text=True, cwd=tmp_path, env=_clean_env(),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "demo" / "predictions.jsonl").is_file()
