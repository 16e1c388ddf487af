"""`drifa-edge score --dicom FOLDER --routes serve.toml` on the session's local Ray: the
archive's cases by serve's routing rules, the same records as `predict --dicom`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serve"))  # case_index_helpers

from case_index_helpers import make_archive, routes_config  # noqa: E402

# one Ray job, 13-35 s on a busy 2-core machine: slow (the default run has the index and
# `predict --dicom` in tests/serve/test_case_index.py, and score == predict in test_batch.py)
pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_score_dicom_archive_equals_predict_dicom(ray_local, checkpoint, tmp_path):
    pytest.importorskip("pydicom")
    from typer.testing import CliRunner

    from drifa_edge.cli import app

    archive = make_archive(tmp_path)
    source = ["--dicom", str(archive["folder"]), "--routes", str(routes_config(tmp_path / "r.toml"))]
    common = ["-T", "4", "--threads", "1", "--batch-size", "8"]
    ray_out, local_out = tmp_path / "ray.jsonl", tmp_path / "local.jsonl"
    run = CliRunner().invoke(
        app, ["score", str(checkpoint), *source, "--out", str(ray_out), "--actors", "1", "--cpus-per-actor", "1", *common]
    )  # fmt: skip
    assert run.exit_code == 9, run.output  # study B lacks its blood image: an error line, not a gap
    assert "3 case(s) (1 with a task missing)" in run.output and "2 ok, 1 failed" in run.output
    run = CliRunner().invoke(app, ["predict", str(checkpoint), *source, "--out", str(local_out), *common])
    assert run.exit_code == 9, run.output

    def records(path: Path) -> list[dict]:
        return [json.loads(line) for line in path.read_text().splitlines()]

    by_ray = records(ray_out)
    assert {r["case_id"] for r in by_ray} == set(archive["cases"])
    assert all(r["worker"]["actor_id"] for r in by_ray)
    # same cases, same files, same batches of good cases (A and C together), same seeds: identical
    assert [{k: v for k, v in r.items() if k != "worker"} for r in by_ray] == records(local_out)
    for r in by_ray:
        want = archive["cases"][r["case_id"]]
        assert r["inputs"] == {t: None if p is None else str(p) for t, p in want.items()}
