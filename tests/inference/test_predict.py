"""`predict_cases` and `drifa-edge predict`: bad files, exit codes, kill and resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from inference_helpers import make_checkpoint, png_bomb, write_good_case, write_manifest, write_png

from drifa_edge.errors import ArtifactError, ConfigError, MissingDependencyError
from drifa_edge.inference import predictor as predictor_module
from drifa_edge.inference.engine import EngineConfig
from drifa_edge.inference.manifest import Case, read_manifest
from drifa_edge.inference.predict import predict_cases
from drifa_edge.inference.predictor import choose_runtime
from drifa_edge.inference.writers import read_jsonl
from drifa_edge.runtimes.base import RuntimeOptions

pytest.importorskip("torch")

TASKS = ("derm", "blood")
FAST = {"options": RuntimeOptions(threads=1), "engine_cfg": EngineConfig(samples=4, seed=0)}


def good_manifest(folder: Path, n: int, name: str = "cases.csv") -> Path:
    rows = []
    for i in range(n):
        d, b = write_good_case(folder, f"g{i}", seed=i)
        rows.append((f"g{i}", d.name, b.name))
    return write_manifest(folder / name, rows)


@pytest.fixture()
def mixed_manifest(tmp_path) -> tuple[Path, dict[str, str]]:
    """Three good cases and one case per kind of bad input; returns (manifest, case -> culprit)."""
    rows = []
    for i in range(3):
        d, b = write_good_case(tmp_path, f"g{i}", seed=i)
        rows.append((f"g{i}", d.name, b.name))
    d0, b0 = f"{rows[0][1]}", f"{rows[0][2]}"
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not an image")
    (tmp_path / "empty.jpg").write_bytes(b"")
    nan = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    nan[5, 5] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    write_png(tmp_path / "gray.png", np.random.default_rng(1).random((40, 40)))
    png_bomb(tmp_path / "bomb.png")
    bad = {
        "corrupt": ("corrupt.png", b0, "corrupt.png"),
        "empty": (d0, "empty.jpg", "empty.jpg"),
        "nan": (d0, "nan.npy", "nan.npy"),
        "missing_cell": ("", b0, "missing modality derm"),
        "gray_for_rgb": ("gray.png", b0, "gray.png"),
        "bomb": (d0, "bomb.png", "bomb.png"),
        "no_file": ("nowhere.png", b0, "nowhere.png"),
    }
    rows += [(case, d, b) for case, (d, b, _) in bad.items()]
    rows.insert(2, rows.pop())  # a bad case between good ones
    return write_manifest(tmp_path / "cases.csv", rows), {c: why for c, (_, _, why) in bad.items()}


def test_bad_files_become_error_lines_and_the_batch_goes_on(checkpoint, mixed_manifest, tmp_path, caplog):
    manifest, culprits = mixed_manifest
    out = tmp_path / "preds.jsonl"
    summary = predict_cases(checkpoint, read_manifest(manifest, TASKS), out, batch_size=2, **FAST)
    records = {r["case_id"]: r for r in read_jsonl(out)}
    assert len(records) == 10 == summary.ok + summary.failed
    assert (summary.ok, summary.failed, summary.exit_code) == (3, 7, 9)
    for case, why in culprits.items():
        assert records[case]["status"] == "error" and why in records[case]["error"], records[case]
        assert records[case]["tasks"] is None
        assert f"case {case}:" in caplog.text  # also reported on stderr
    for i in range(3):
        r = records[f"g{i}"]
        assert r["status"] == "ok" and r["error"] is None
        for task, classes in (("derm", ["nevus", "melanoma", "other"]), ("blood", ["a", "b"])):
            t = r["tasks"][task]
            assert list(t["probabilities"]) == classes and list(t["std"]) == classes
            assert sum(t["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
            assert t["predicted"] == max(t["probabilities"], key=t["probabilities"].get)
            pe, ee, mi = t["predictive_entropy"], t["expected_entropy"], t["mutual_information"]
            assert pe == pytest.approx(ee + mi, abs=1e-5) and mi >= 0
        assert r["tasks"]["derm"]["refer"] == (r["tasks"]["derm"]["mutual_information"] > 1e-3)
        assert r["tasks"]["derm"]["referral"]["threshold"] == 1e-3
        assert r["tasks"]["blood"]["refer"] is None  # no threshold in the card for blood
        assert (
            r["model_sha256"]
            == json.loads((checkpoint / "model_card.json").read_text())["files"]["model.safetensors"]
        )
        assert (r["runtime"], r["precision"], r["device"], r["samples"], r["seed"]) == (
            "torch",
            "fp32",
            "cpu",
            4,
            0,
        )
        assert r["ensemble_size"] == 1 and r["drifa_edge_version"]


def test_channel_conversion_only_when_allowed(checkpoint, tmp_path):
    write_png(tmp_path / "gray.png", np.random.default_rng(1).random((40, 40)))
    _, b = write_good_case(tmp_path, "x", seed=0)
    case = Case("c", {"derm": tmp_path / "gray.png", "blood": b})
    s = predict_cases(checkpoint, [case], tmp_path / "a.jsonl", **FAST)
    assert s.failed == 1
    s = predict_cases(checkpoint, [case], tmp_path / "b.jsonl", allow_channel_conversion=True, **FAST)
    record = read_jsonl(tmp_path / "b.jsonl")[0]
    assert s.ok == 1 and record["channel_conversion"] == {"derm": "gray->RGB"}


def test_cli_exit_code_9_and_table(checkpoint, mixed_manifest, tmp_path):
    from typer.testing import CliRunner

    from drifa_edge.cli import app

    manifest, _ = mixed_manifest
    out = tmp_path / "cli.jsonl"
    args = ["predict", str(checkpoint), "--manifest", str(manifest), "--out", str(out), "-T", "3"]
    result = CliRunner().invoke(app, [*args, "--threads", "1"])
    assert result.exit_code == 9, result.output
    assert "3 ok, 7 failed" in result.output and "g0" in result.output and "corrupt.png" in result.output
    assert len(read_jsonl(out)) == 10
    again = CliRunner().invoke(app, [*args, "--threads", "1"])  # exists, no --resume
    assert isinstance(again.exception, ConfigError)


def test_cli_single_case_to_stdout_exit_0(checkpoint, tmp_path):
    from typer.testing import CliRunner

    from drifa_edge.cli import app

    d, b = write_good_case(tmp_path, "one", seed=3)
    result = CliRunner().invoke(
        app, ["predict", str(checkpoint), "-i", f"derm={d}", "-i", f"blood={b}", "-T", "3", "--threads", "1"]
    )
    assert result.exit_code == 0, result.output
    line = next(x for x in result.stdout.splitlines() if x.startswith("{"))
    record = json.loads(line)
    assert record["case_id"] == "one_derm" and record["status"] == "ok" and record["samples"] == 3


def test_csv_format(checkpoint, tmp_path):
    manifest = good_manifest(tmp_path, 3)
    out = tmp_path / "preds.csv"
    s = predict_cases(checkpoint, read_manifest(manifest, TASKS), out, fmt="csv", **FAST)
    assert s.csv_path == out and s.out_path == tmp_path / "preds.jsonl"
    lines = out.read_text().splitlines()
    assert len(lines) == 4 and lines[0].startswith("case_id,status,error,derm_predicted")


def test_existing_output_needs_resume_or_force(checkpoint, tmp_path):
    manifest = good_manifest(tmp_path, 2)
    out = tmp_path / "p.jsonl"
    cases = read_manifest(manifest, TASKS)
    predict_cases(checkpoint, cases, out, **FAST)
    with pytest.raises(ConfigError, match="--resume"):
        predict_cases(checkpoint, cases, out, **FAST)
    assert predict_cases(checkpoint, cases, out, resume=True, **FAST).skipped == 2
    assert predict_cases(checkpoint, cases, out, force=True, **FAST).ok == 2
    assert len(read_jsonl(out)) == 2
    other = make_checkpoint(tmp_path / "other", seed=5)
    with pytest.raises(ConfigError, match="another model"):
        predict_cases(other, cases, out, resume=True, **FAST)


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from drifa_edge.inference.engine import EngineConfig
    from drifa_edge.inference.manifest import read_manifest
    from drifa_edge.inference.predict import predict_cases
    from drifa_edge.runtimes.base import RuntimeOptions

    written = [0]

    def on_record(record):
        written[0] += 1
        if written[0] == int(sys.argv[4]):
            os.kill(os.getpid(), signal.SIGKILL)  # kill -9 in the middle of the run

    cases = read_manifest(sys.argv[2], ("derm", "blood"))
    predict_cases(sys.argv[1], cases, sys.argv[3], options=RuntimeOptions(threads=1),
                  engine_cfg=EngineConfig(samples=4, seed=0), batch_size=2, on_record=on_record)
    """
)


def test_kill_and_resume_neither_loses_nor_duplicates(checkpoint, tmp_path):
    manifest = good_manifest(tmp_path, 7)
    out = tmp_path / "p.jsonl"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, str(checkpoint), str(manifest), str(out), "3"],
        env=env,
        capture_output=True,
        timeout=300,
    )
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert len(read_jsonl(out, repair=False)) == 3  # killed after the third line
    with open(out, "ab") as f:  # and as if killed while writing the fourth
        f.write(b'{"case_id": "g3", "status": "ok", "tasks": {"derm": {"predicted": "nev')
    cases = read_manifest(manifest, TASKS)
    summary = predict_cases(checkpoint, cases, out, resume=True, batch_size=2, **FAST)
    assert (summary.skipped, summary.ok, summary.failed) == (3, 4, 0)
    ids = [r["case_id"] for r in read_jsonl(out)]
    assert sorted(ids) == [f"g{i}" for i in range(7)]  # every case exactly once
    # each case has its own mask stream: the resumed file equals an uninterrupted run
    whole = tmp_path / "whole.jsonl"
    predict_cases(checkpoint, cases, whole, batch_size=3, **FAST)
    resumed = {r["case_id"]: r["tasks"] for r in read_jsonl(out)}
    assert resumed == {r["case_id"]: r["tasks"] for r in read_jsonl(whole)}


def test_resume_retries_cases_that_failed(checkpoint, tmp_path):
    _, b = write_good_case(tmp_path, "x", seed=0)
    late = tmp_path / "late.png"
    case = Case("c", {"derm": late, "blood": b})
    out = tmp_path / "p.jsonl"
    assert predict_cases(checkpoint, [case], out, **FAST).failed == 1
    write_png(late, np.random.default_rng(0).random((40, 40, 3)))  # the file turns up
    s = predict_cases(checkpoint, [case], out, resume=True, **FAST)
    assert (s.ok, s.failed, s.skipped) == (1, 0, 0)
    assert [r["status"] for r in read_jsonl(out)] == ["ok"]


def test_ensemble_folder(tmp_path):
    root = tmp_path / "ens"
    for k in range(2):
        make_checkpoint(root / f"member-{k}", seed=k)
    from drifa_edge.artifact.ensemble import write_manifest as write_ensemble

    referral = {"derm": {"metric": "predictive_entropy", "threshold": 0.5, "target_rate": 0.1}}
    write_ensemble(root, ["member-0", "member-1"], {"referral": referral})
    manifest = good_manifest(tmp_path, 2)
    out = tmp_path / "p.jsonl"
    s = predict_cases(root, read_manifest(manifest, TASKS), out, **FAST)
    assert s.ensemble_size == 2 and s.ok == 2
    single = tmp_path / "single.jsonl"
    predict_cases(root / "member-0", read_manifest(manifest, TASKS), single, **FAST)
    both, one = read_jsonl(out)[0], read_jsonl(single)[0]
    assert both["ensemble_size"] == 2 and both["model_sha256"] != one["model_sha256"]
    assert both["tasks"]["derm"]["probabilities"] != one["tasks"]["derm"]["probabilities"]
    # the ensemble's own referral rule (fitted on its K*T samples) replaces the member's
    assert both["tasks"]["derm"]["referral"]["metric"] == "predictive_entropy"
    assert one["tasks"]["derm"]["referral"]["metric"] == "mutual_information"


def test_choose_runtime(checkpoint, tmp_path, monkeypatch):
    assert choose_runtime(checkpoint) == "torch"
    assert choose_runtime(checkpoint, "openvino") == "openvino"
    with pytest.raises(Exception, match="Did you mean 'openvino'"):
        choose_runtime(checkpoint, "openvno")
    export = tmp_path / "export"
    (export / "onnx").mkdir(parents=True)
    (export / "openvino").mkdir()
    (export / "model_card.json").write_text("{}")  # only its presence matters here
    installed = {"onnxruntime"}
    monkeypatch.setattr(
        predictor_module, "probe_runtime", lambda name: {"available": name in installed, "reason": "absent"}
    )
    assert choose_runtime(export) == "onnxruntime"
    installed.add("openvino")
    assert choose_runtime(export) == "openvino"  # OpenVINO first when both are there
    installed.clear()
    with pytest.raises(MissingDependencyError, match="onnx/"):
        choose_runtime(export)
    with pytest.raises(ArtifactError, match="int8"):
        choose_runtime(export, precision="int8")
    with pytest.raises(ArtifactError):
        choose_runtime(tmp_path / "nothing")
