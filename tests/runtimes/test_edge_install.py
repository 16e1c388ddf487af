"""The scanner PC's install ('drifa-edge[openvino]': numpy + OpenVINO): predict, --precision auto
and the model cache work with torch, NNCF, scipy and scikit-learn all unimportable (the packages
the runtime-only extra no longer pulls). The fresh-venv check is benchmarks/cold_start_memory.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from drifa_edge.runtimes.base import probe_runtime

BLOCKED = ("torch", "nncf", "scipy", "sklearn")
SCRIPT = textwrap.dedent(
    f"""
    import importlib.abc, sys

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {BLOCKED!r}:
                raise ModuleNotFoundError(f"No module named {{name!r}} (blocked: not in the edge install)", name=name)
            return None

    sys.meta_path.insert(0, Block())
    from drifa_edge.cli import main
    sys.argv = ["drifa-edge", *sys.argv[1:]]
    main()
    """
)


def test_predict_on_openvino_needs_no_quantizer(tiny_artifacts, tmp_path):
    if not probe_runtime("openvino").get("available"):
        pytest.skip("openvino not installed")
    from PIL import Image

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(tmp_path / "derm.png")
    Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8)).save(tmp_path / "xray.png")
    cache = tmp_path / "cache"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DRIFA_EDGE_CACHE_DIR": str(cache)}
    for run in ("cold", "warm"):  # the second process compiles nothing: it loads the cached blobs
        out = tmp_path / f"{run}.jsonl"
        args = ["predict", str(tiny_artifacts[1]), "--runtime", "openvino", "--precision", "auto",
                "-T", "5", "--threads", "1", "--streams", "2", "--input", f"derm={tmp_path / 'derm.png'}",
                "--input", f"xray={tmp_path / 'xray.png'}", "--out", str(out)]  # fmt: skip
        proc = subprocess.run(
            [sys.executable, "-c", SCRIPT, *args], capture_output=True, text=True, timeout=300, env=env
        )
        assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-3000:])
        record = json.loads(out.read_text().splitlines()[0])
        assert record["status"] == "ok" and (record["runtime"], record["precision"]) == ("openvino", "fp32")
        assert "precision auto" in proc.stderr
    (build,) = cache.iterdir()
    assert list(build.glob("*.blob")) and list(build.glob("suffix-*rows.xml"))
