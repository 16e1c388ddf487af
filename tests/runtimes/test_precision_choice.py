"""--precision auto: the fastest build that passed the drift gate on this ISA class, read from
the model card (drifa_edge.runtimes.choice), and its record written by `check --write-card`."""

from __future__ import annotations

import json

import pytest

from drifa_edge.artifact.card import read_card, write_card
from drifa_edge.errors import ConfigError, UnsupportedBackendError
from drifa_edge.runtimes.choice import (
    RECORD_KEY,
    BuildRecord,
    choose_build,
    choose_for_artifact,
    new_record,
    records,
    with_record,
)

EXPORT_BUILDS = [("openvino", "fp32"), ("openvino", "bf16"), ("openvino", "int8"),
                 ("onnxruntime", "fp32"), ("onnxruntime", "int8")]  # fmt: skip
ALL_INSTALLED = lambda name: True  # noqa: E731


@pytest.fixture
def card(tiny_checkpoint):
    return read_card(tiny_checkpoint, verify=False)


def _record(runtime, precision, gate="pass", p50=100.0):
    return BuildRecord(
        runtime, precision, gate, p50, samples=30, cpu="test cpu", recorded="2026-01-01T00:00:00Z"
    )


def _card_with(card, isa, *recs):
    for r in recs:
        card = with_record(card, r, isa)
    return card


def test_fastest_passed_build_wins(card):
    c = _card_with(card, "amx", _record("openvino", "int8", p50=60), _record("openvino", "bf16", p50=55),
                   _record("onnxruntime", "int8", p50=90))  # fmt: skip
    choice = choose_build(c, EXPORT_BUILDS, isa="amx", installed=ALL_INSTALLED)
    assert (choice.runtime, choice.precision) == ("openvino", "bf16")
    assert "55 ms" in choice.reason and "openvino/int8 60 ms" in choice.reason


def test_failed_builds_and_other_isas_are_never_picked(card):
    c = _card_with(card, "avx512_bf16", _record("openvino", "int8", gate="fail", p50=40),
                   _record("openvino", "bf16", p50=70))  # fmt: skip
    c = with_record(c, _record("onnxruntime", "int8", p50=10), "amx")  # fast, but on another ISA
    choice = choose_build(c, EXPORT_BUILDS, isa="avx512_bf16", installed=ALL_INSTALLED)
    assert (choice.runtime, choice.precision) == ("openvino", "bf16")
    # on an AVX2 machine nothing was recorded: FP32, with the way to record one
    fallback = choose_build(c, EXPORT_BUILDS, isa="avx2", installed=ALL_INSTALLED)
    assert (fallback.runtime, fallback.precision) == ("openvino", "fp32")
    assert "--write-card" in fallback.reason and "avx2" in fallback.reason


def test_only_builds_the_folder_has_and_a_runtime_can_run(card):
    c = _card_with(card, "amx", _record("openvino", "int8", p50=50), _record("onnxruntime", "int8", p50=80))
    no_openvino = lambda name: name != "openvino"  # noqa: E731
    choice = choose_build(c, EXPORT_BUILDS, isa="amx", installed=no_openvino)
    assert (choice.runtime, choice.precision) == ("onnxruntime", "int8")
    # the folder lost its openvino-int8/: the record alone is not enough
    builds = [b for b in EXPORT_BUILDS if b != ("openvino", "int8")]
    assert choose_build(c, builds, isa="amx", installed=ALL_INSTALLED).precision == "int8"
    assert choose_build(c, builds, isa="amx", installed=ALL_INSTALLED).runtime == "onnxruntime"
    # a runtime named by the user: chosen within it
    within = choose_build(c, EXPORT_BUILDS, runtime="onnxruntime", isa="amx", installed=ALL_INSTALLED)
    assert (within.runtime, within.precision) == ("onnxruntime", "int8")


def test_an_untimed_pass_is_not_picked(card):
    c = with_record(card, BuildRecord("openvino", "int8", "pass", None, samples=30), "amx")
    assert choose_build(c, EXPORT_BUILDS, isa="amx", installed=ALL_INSTALLED).precision == "fp32"


def test_no_fp32_build_is_an_error(card):
    with pytest.raises(UnsupportedBackendError, match="no fp32 build"):
        choose_build(card, [("openvino", "int8")], isa="amx", installed=lambda name: True)
    with pytest.raises(UnsupportedBackendError, match="install"):
        choose_build(card, EXPORT_BUILDS, isa="amx", installed=lambda name: False)


def test_record_validation_and_round_trip(card, tmp_path):
    with pytest.raises(ConfigError, match="gate verdict"):
        BuildRecord("openvino", "int8", "maybe", 10.0, 30)
    with pytest.raises(ConfigError, match="p50_ms"):
        BuildRecord("openvino", "int8", "pass", 0.0, 30)
    with pytest.raises(ConfigError, match="ISA class"):
        with_record(card, _record("openvino", "int8"), "pentium")
    rec = new_record("openvino", "int8", True, 61.234, 30, threads=2, policy="default")
    assert rec.gate == "pass" and rec.p50_ms == 61.23 and rec.recorded.endswith("Z")
    c = with_record(with_record(card, rec, "amx"), _record("openvino", "int8", gate="fail"), "amx")
    (only,) = records(c, "amx")  # the second record of a build replaces the first
    assert only.gate == "fail"
    folder = tmp_path / "card"
    folder.mkdir()
    write_card(with_record(card, rec, "avx2"), folder)
    (back,) = records(read_card(folder, verify=False), "avx2")
    assert back == rec
    raw = json.loads((folder / "model_card.json").read_text())
    assert raw["metrics"][RECORD_KEY]["avx2"]["openvino/int8"]["p50_ms"] == 61.23


def test_choose_for_artifact_reads_the_export_card(tiny_artifacts, tmp_path, monkeypatch):
    pytest.importorskip("openvino")
    import shutil

    from drifa_edge.runtimes import choice as choice_module

    export = tmp_path / "export"
    shutil.copytree(tiny_artifacts[1], export)
    assert choose_for_artifact(export, isa="amx").precision == "fp32"
    card = read_card(export, verify=False)
    write_card(with_record(card, _record("openvino", "bf16", p50=5.0), "amx"), export)
    monkeypatch.setattr(choice_module, "isa_class", lambda: "amx")
    picked = choose_for_artifact(export)
    assert (picked.runtime, picked.precision) == ("openvino", "bf16")
    # predict --precision auto runs that build (and says why)
    from typer.testing import CliRunner

    from drifa_edge.cli.app import app
    from drifa_edge.runtimes.threads import THREADS_ENV

    monkeypatch.delenv(THREADS_ENV, raising=False)  # --threads sets it: restored after the test
    img = _image(tmp_path, card)
    result = CliRunner().invoke(
        app, ["predict", str(export), *img, "--precision", "auto", "-T", "3", "--threads", "1"]
    )
    assert result.exit_code == 0, result.output
    line = json.loads(next(ln for ln in result.stdout.splitlines() if ln.startswith("{")))
    assert (line["runtime"], line["precision"]) == ("openvino", "bf16")


def _image(tmp_path, card) -> list[str]:
    import numpy as np
    from PIL import Image

    args = []
    for task in card.task_names:
        spec = card.preprocess[task]
        shape = (spec.size, spec.size) if spec.channels == 1 else (spec.size, spec.size, 3)
        path = tmp_path / f"{task}.png"
        Image.fromarray(np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)).save(path)
        args += ["--input", f"{task}={path}"]
    return args


def test_serve_inference_precision_auto(tiny_artifacts, tmp_path):
    """serve.toml's [inference] precision = "auto": the service opens the card's choice and
    reports the resolved runtime and precision (never "auto") in its records' metadata."""
    pytest.importorskip("openvino")
    import shutil

    from drifa_edge.serve.config import InferenceConfig
    from drifa_edge.serve.inference import open_predictor

    export = tmp_path / "export"
    shutil.copytree(tiny_artifacts[1], export)
    card = read_card(export, verify=False)
    from drifa_edge.runtimes.cpu import isa_class

    write_card(with_record(card, _record("openvino", "bf16", p50=5.0), isa_class()), export)
    predictor = open_predictor(export, InferenceConfig(precision="auto", samples=2, threads=1))
    try:
        assert (predictor.runtime, predictor.info["precision"]) == ("openvino", "bf16")
    finally:
        predictor.close()
