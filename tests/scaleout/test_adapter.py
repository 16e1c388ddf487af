"""The adapter's prepare_case + Predictor give exactly local predict's records (no Ray
needed), and the scale-out modules import without Ray (the edge install)."""

from __future__ import annotations

import pickle
import subprocess
import sys

import pytest
from inference_helpers import write_good_case
from scaleout_helpers import TASKS, good_manifest

from drifa_edge.inference.engine import EngineConfig
from drifa_edge.inference.manifest import Case, read_manifest
from drifa_edge.inference.predict import predict_cases
from drifa_edge.inference.writers import read_jsonl
from drifa_edge.runtimes.base import RuntimeOptions
from drifa_edge.scaleout.adapter import Predictor, model_card, prepare_case

OPTIONS = RuntimeOptions(threads=1)
CFG = EngineConfig(samples=4, seed=0)


def test_prepared_cases_give_predicts_records(checkpoint, tmp_path):
    cases = read_manifest(good_manifest(tmp_path, 4), TASKS)
    _, blood = write_good_case(tmp_path, "x", seed=9)
    cases.insert(1, Case("broken", {"derm": tmp_path / "nowhere.png", "blood": blood}))
    card = model_card(checkpoint)
    prepared = [pickle.loads(pickle.dumps(prepare_case(c, card))) for c in cases]  # crosses processes
    assert "nowhere.png" in prepared[1].error
    predictor = Predictor.open(checkpoint, options=OPTIONS, engine_cfg=CFG)
    try:
        got = predictor.predict_prepared(prepared)
        assert predictor.predict_prepared(prepared) == got  # no state carried between calls
    finally:
        predictor.close()
    predict_cases(checkpoint, cases, tmp_path / "local.jsonl", options=OPTIONS, engine_cfg=CFG, batch_size=8)
    assert got == read_jsonl(tmp_path / "local.jsonl")
    assert [r["status"] for r in got] == ["ok", "error", "ok", "ok", "ok"]


def test_scaleout_imports_without_ray():
    code = (
        "import sys\n"
        "import drifa_edge.cli, drifa_edge.scaleout.batch, drifa_edge.scaleout.serve, drifa_edge.scaleout.config\n"
        "import drifa_edge.scaleout.backend, drifa_edge.serve.config, drifa_edge.serve.inference\n"
        "assert 'ray' not in sys.modules, 'ray imported at module level'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_missing_ray_names_the_extra(monkeypatch):
    from drifa_edge.errors import MissingDependencyError
    from drifa_edge.scaleout.cluster import import_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    with pytest.raises(MissingDependencyError, match=r"drifa-edge\[ray\]"):
        import_ray()
