"""A scanner-side install has numpy and one runtime, no torch: opening an export,
running the engine and `drifa-edge predict` must work with torch not importable.

Each case runs in a fresh interpreter whose meta path refuses ``torch`` (and anything
below it), so an accidental ``import torch`` anywhere on the path fails loudly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from drifa_edge.runtimes.base import probe_runtime

BLOCK_TORCH = textwrap.dedent(
    """
    import importlib.abc, sys

    class BlockTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ModuleNotFoundError(f"No module named {name!r} (blocked by the torch-free test)", name=name)
            return None

    sys.meta_path.insert(0, BlockTorch())
    """
)

ENGINE_SCRIPT = BLOCK_TORCH + textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from drifa_edge.inference.engine import EngineConfig, run_mc
    from drifa_edge.runtimes.base import RuntimeOptions, open_runtime

    name, path = sys.argv[1], sys.argv[2]
    rt = open_runtime(name, path, RuntimeOptions(threads=1))
    rng = np.random.default_rng(0)
    size = rt.card.model.image_size
    xs = [rng.standard_normal((2, t.channels, size, size)).astype(np.float32) for t in rt.card.model.tasks]
    out = run_mc([rt], xs, EngineConfig(samples=4))
    try:
        import torch  # noqa: F401
        blocked = False
    except ImportError:
        blocked = True
    print(json.dumps({
        "shapes": {k: list(v.shape) for k, v in out.items()},
        "torch_loaded": any(m == "torch" or m.startswith("torch.") for m in sys.modules),
        "blocked": blocked,
    }))
    """
)

PREDICT_SCRIPT = BLOCK_TORCH + textwrap.dedent(
    """
    import sys
    from drifa_edge.cli import main

    sys.argv = ["drifa-edge", *sys.argv[1:]]
    main()
    """
)


def run_python(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


@pytest.mark.parametrize("name", ["onnxruntime", "openvino"])
def test_engine_runs_an_export_without_torch(name, tiny_artifacts):
    if not probe_runtime(name).get("available"):
        pytest.skip(f"{name} not installed")
    proc = run_python(ENGINE_SCRIPT, name, str(tiny_artifacts[1]))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["blocked"] and not result["torch_loaded"]
    assert result["shapes"] == {"derm": [2, 4, 3], "xray": [2, 4, 2]}


def test_torch_runtime_without_torch_names_the_extra(tiny_artifacts):
    script = BLOCK_TORCH + textwrap.dedent(
        """
        import sys
        from drifa_edge.errors import MissingDependencyError
        from drifa_edge.runtimes.base import open_runtime
        try:
            open_runtime("torch", sys.argv[1])
        except MissingDependencyError as e:
            print(e)
        """
    )
    proc = run_python(script, str(tiny_artifacts[0]))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "drifa-edge[torch]" in proc.stdout


@pytest.mark.parametrize("name", ["onnxruntime", "openvino"])
def test_predict_cli_runs_an_export_without_torch(name, tiny_artifacts, tmp_path):
    if not probe_runtime(name).get("available"):
        pytest.skip(f"{name} not installed")
    from PIL import Image

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(tmp_path / "derm.png")
    Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8)).save(tmp_path / "xray.png")
    out = tmp_path / "pred.jsonl"
    proc = run_python(
        PREDICT_SCRIPT,
        "predict",
        str(tiny_artifacts[1]),
        "--runtime",
        name,
        "--samples",
        "5",
        "--input",
        f"derm={tmp_path / 'derm.png'}",
        "--input",
        f"xray={tmp_path / 'xray.png'}",
        "--out",
        str(out),
    )
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-3000:])
    record = json.loads(out.read_text().splitlines()[0])
    assert record["status"] == "ok"
    assert set(record["tasks"]) == {"derm", "xray"}
    assert record["tasks"]["derm"]["predicted"] in ("nevus", "melanoma", "keratosis")
