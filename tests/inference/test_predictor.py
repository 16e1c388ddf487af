"""The per-case API: prepare_case (no runtime, picklable, errors kept) and Predictor."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from inference_helpers import write_good_case, write_manifest

from drifa_edge.inference.engine import EngineConfig
from drifa_edge.inference.manifest import Case, read_manifest
from drifa_edge.inference.predict import predict_cases
from drifa_edge.inference.predictor import Predictor, PreparedCase, prepare_case
from drifa_edge.runtimes.base import RuntimeOptions

pytest.importorskip("torch")

TASKS = ("derm", "blood")
OPTIONS = RuntimeOptions(threads=1)
ENGINE = EngineConfig(samples=4, seed=0)


@pytest.fixture()
def cases(tmp_path) -> list[Case]:
    rows = []
    for i in range(3):
        d, b = write_good_case(tmp_path, f"g{i}", seed=i)
        rows.append((f"g{i}", d.name, b.name))
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot an image")
    rows.insert(1, ("bad", "corrupt.png", rows[0][2]))
    return read_manifest(write_manifest(tmp_path / "cases.csv", rows), TASKS)


def test_predictor_records_equal_predict_cases_lines(checkpoint, cases, tmp_path):
    out = tmp_path / "pred.jsonl"
    predict_cases(checkpoint, cases, out, options=OPTIONS, engine_cfg=ENGINE, batch_size=2)
    written = [json.loads(line) for line in out.read_text().splitlines()]
    with Predictor.open(checkpoint, options=OPTIONS, engine_cfg=ENGINE) as predictor:
        records = predictor.predict(cases)  # one batch here, two batches of 2 above
        assert predictor.card.task_names == TASKS
        assert predictor.meta["runtime"] == "torch" and predictor.meta["samples"] == 4
    assert [r["case_id"] for r in records] == ["g0", "bad", "g1", "g2"]
    # same seeds per case, whatever the batch: the same numbers, the same JSON
    assert json.dumps(records, sort_keys=True) == json.dumps(written, sort_keys=True)
    assert records[1]["status"] == "error" and "corrupt.png" in records[1]["error"]


def test_prepare_case_is_picklable_and_keeps_errors(checkpoint, cases):
    with Predictor.open(checkpoint, options=OPTIONS, engine_cfg=ENGINE) as predictor:
        prepared = [prepare_case(case, predictor.card) for case in cases]
        good, bad = prepared[0], prepared[1]
        assert good.ok and [a.shape[0] for a in good.arrays] == [3, 1]  # (C, S, S) per task
        assert not bad.ok and bad.arrays is None and "corrupt.png" in bad.error
        copies = pickle.loads(pickle.dumps(prepared))  # what a worker process sends back
        assert all(isinstance(p, PreparedCase) for p in copies)
        np.testing.assert_array_equal(copies[0].arrays[0], good.arrays[0])
        assert predictor.predict_prepared(copies) == predictor.predict(cases)


def test_predict_prepared_isolates_a_case_that_breaks_the_batch(checkpoint, cases):
    with Predictor.open(checkpoint, options=OPTIONS, engine_cfg=ENGINE) as predictor:
        prepared = [predictor.prepare(case) for case in cases]
        broken = PreparedCase(prepared[2].case, [a[:, :5, :5] for a in prepared[2].arrays])  # wrong size
        records = predictor.predict_prepared([prepared[0], broken, prepared[3]])
    assert [r["status"] for r in records] == ["ok", "error", "ok"]
    assert records[1]["error"].startswith("inference failed")
    assert records[1]["tasks"] is None and records[1]["mc_seed"] is None


def test_close_releases_the_runtimes(checkpoint):
    predictor = Predictor.open(checkpoint, options=OPTIONS, engine_cfg=ENGINE)
    assert predictor.ensemble_size == 1
    predictor.close()
    assert predictor.runtimes == []
