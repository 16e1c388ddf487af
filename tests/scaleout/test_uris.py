"""URI cells (read through pyarrow.fs): parsing, fetching, and the record naming the URI.
``file://`` URIs stand in for s3:// and gs:// (the same pyarrow.fs code path, no network)."""

from __future__ import annotations

import json

import pytest
from inference_helpers import write_good_case, write_manifest
from scaleout_helpers import TASKS

from drifa_edge.errors import BadInputError
from drifa_edge.inference.engine import EngineConfig
from drifa_edge.inference.manifest import Case, read_manifest
from drifa_edge.inference.predict import predict_cases
from drifa_edge.inference.writers import read_jsonl
from drifa_edge.runtimes.base import RuntimeOptions
from drifa_edge.scaleout.adapter import Predictor, model_card
from drifa_edge.scaleout.batch import _apply_fix, _prepare
from drifa_edge.scaleout.uris import fetch, is_uri, manifest_uris

pytest.importorskip("pyarrow")
OPTIONS, CFG = RuntimeOptions(threads=1), EngineConfig(samples=4, seed=0)


def uri_manifest(folder):
    d0, b0 = write_good_case(folder, "u0", seed=0)
    d1, b1 = write_good_case(folder, "u1", seed=1)
    rows = [
        ("u0", d0.as_uri(), b0.name),
        ("u1", d1.name, b1.as_uri()),
        ("gone", (folder / "gone.png").as_uri(), b0.name),
    ]
    return write_manifest(folder / "uris.csv", rows), [(d0, b0), (d1, b1)]


def test_manifest_uris_and_fetch(tmp_path):
    manifest, [(d0, b0), (d1, b1)] = uri_manifest(tmp_path)
    assert is_uri("s3://bucket/key.png") and is_uri("file:///x.png") and not is_uri("/data/x.png")
    uris = manifest_uris(manifest, TASKS)
    assert uris == {
        "u0": {"derm": d0.as_uri()},
        "u1": {"blood": b1.as_uri()},
        "gone": {"derm": (tmp_path / "gone.png").as_uri()},
    }
    (tmp_path / "fetched").mkdir()
    copy = fetch(d0.as_uri(), tmp_path / "fetched", "x")
    assert copy.suffix == ".png" and copy.read_bytes() == d0.read_bytes()
    with pytest.raises(BadInputError, match="gone.png"):
        fetch((tmp_path / "gone.png").as_uri(), tmp_path, "y")


def test_uri_cases_give_local_predicts_numbers_and_name_the_uri(checkpoint, tmp_path):
    manifest, pairs = uri_manifest(tmp_path)
    uris = manifest_uris(manifest, TASKS)
    cases = read_manifest(manifest, TASKS)
    card = model_card(checkpoint)
    prepared, fixes = [], []
    for case in cases:
        cells = {t: str(p) for t, p in case.inputs.items()} | uris.get(case.case_id, {})
        item, fix = _prepare(case.case_id, cells, card, False)
        prepared.append(item)
        fixes.append(json.loads(json.dumps(fix)))  # as it travels between Ray stages
    predictor = Predictor.open(checkpoint, options=OPTIONS, engine_cfg=CFG)
    try:
        records = predictor.predict_prepared(prepared)
    finally:
        predictor.close()
    for record, fix in zip(records, fixes, strict=True):
        _apply_fix(record, fix)
    by_id = {r["case_id"]: r for r in records}
    assert (
        by_id["u0"]["inputs"]["derm"] == pairs[0][0].as_uri()
        and by_id["u1"]["inputs"]["blood"] == pairs[1][1].as_uri()
    )
    assert by_id["gone"]["status"] == "error" and (tmp_path / "gone.png").as_uri() in by_id["gone"]["error"]
    assert "drifa-fetch-" not in json.dumps(records)  # no temporary copy is named anywhere
    local = [Case(f"u{i}", {"derm": d, "blood": b}) for i, (d, b) in enumerate(pairs)]
    predict_cases(checkpoint, local, tmp_path / "local.jsonl", options=OPTIONS, engine_cfg=CFG)
    for want in read_jsonl(tmp_path / "local.jsonl"):
        assert by_id[want["case_id"]]["tasks"] == want["tasks"]  # same bytes, same masks, same batch


@pytest.mark.ray
@pytest.mark.slow
def test_score_reads_uris_on_ray(ray_local, checkpoint, tmp_path):
    from drifa_edge.scaleout.batch import score_cases
    from drifa_edge.scaleout.config import BatchConfig

    manifest, pairs = uri_manifest(tmp_path)
    batch = BatchConfig(actors=1, cpus_per_actor=0.75, decode_cpus=0.25)
    summary = score_cases(
        checkpoint, read_manifest(manifest, TASKS), tmp_path / "ray.jsonl", options=OPTIONS, engine_cfg=CFG,
        batch=batch, uris=manifest_uris(manifest, TASKS),
    )  # fmt: skip
    assert (summary.ok, summary.failed) == (2, 1)
    records = {r["case_id"]: r for r in read_jsonl(tmp_path / "ray.jsonl")}
    assert records["u0"]["inputs"]["derm"] == pairs[0][0].as_uri()
    assert (tmp_path / "gone.png").as_uri() in records["gone"]["error"]
