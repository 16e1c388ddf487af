"""Row planning: which runtime x precision rows a folder offers, and why the others are skipped."""

from __future__ import annotations

from pathlib import Path

import pytest

from drifa_edge.bench import rows
from drifa_edge.bench.rows import RowSpec, parse_selection, plan_rows, resolve_checkpoint
from drifa_edge.errors import ConfigError

BASE = RowSpec(row_id="", runtime="", precision="fp32", path="")


def _touch(path: Path, size: int = 10) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)


@pytest.fixture
def export_folder(tmp_path: Path) -> tuple[Path, Path]:
    ckpt = tmp_path / "ckpt"
    _touch(ckpt / "model.safetensors", 100)
    out = tmp_path / "export"
    _touch(out / "onnx" / "prefix.onnx", 7)
    _touch(out / "onnx" / "suffix.onnx", 5)
    _touch(out / "onnx" / "suffix_det.onnx", 5)  # not loaded by an MC run
    _touch(out / "openvino" / "suffix.xml")
    _touch(out / "openvino-int8" / "suffix.xml")
    _touch(out / "tensorrt-jetson-orin-int8" / "suffix.engine")
    return out, ckpt


@pytest.fixture
def all_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plan as if every runtime module were installed (other tests cover the missing case)."""
    monkeypatch.setattr(rows, "runtime_module_missing", lambda runtime: "")


def _by_id(planned):
    return {p.row_id: p for p in planned}


def test_export_folder_rows_follow_the_folders(export_folder, all_modules, monkeypatch):
    out, ckpt = export_folder
    monkeypatch.setattr(rows, "cpu_flags", lambda: {"avx2"})
    planned = plan_rows(out, ckpt, "", (), BASE)
    by_id = _by_id(planned)
    assert [p.row_id for p in planned] == [
        "authors-fp32",
        "torch-fp32",
        "onnxruntime-fp32",
        "onnxruntime-int8",
        "openvino-fp32",
        "openvino-bf16",
        "openvino-int8",
        "tensorrt-jetson-orin-int8",
    ]
    runnable = {p.row_id for p in planned if p.spec is not None}
    assert runnable == {
        "authors-fp32",
        "torch-fp32",
        "onnxruntime-fp32",
        "openvino-fp32",
        "openvino-int8",
        "tensorrt-jetson-orin-int8",
    }
    assert "no onnx-int8/" in by_id["onnxruntime-int8"].reason
    assert "avx512_bf16" in by_id["openvino-bf16"].reason
    trt = by_id["tensorrt-jetson-orin-int8"]
    assert (trt.runtime, trt.precision, trt.note) == ("tensorrt", "int8", "target jetson-orin")
    assert trt.spec.extra == {"target": "jetson-orin"} and trt.spec.path == str(out)
    # size on disk counts exactly the files each row loads
    assert by_id["torch-fp32"].spec.files == (str(ckpt / "model.safetensors"),)
    assert by_id["authors-fp32"].spec.path == str(ckpt)
    assert sorted(Path(f).name for f in by_id["onnxruntime-fp32"].spec.files) == [
        "prefix.onnx",
        "suffix.onnx",
    ]


def test_bf16_offered_with_native_bf16(export_folder, all_modules, monkeypatch):
    out, ckpt = export_folder
    monkeypatch.setattr(rows, "cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    row = _by_id(plan_rows(out, ckpt, "", ("openvino",), BASE))["openvino-bf16"]
    assert row.spec is not None and row.spec.path == str(out)
    assert sorted(Path(f).name for f in row.spec.files) == ["suffix.xml"]  # the fp32 IR


def test_selection_by_runtime_and_precision(export_folder, all_modules):
    out, ckpt = export_folder
    planned = plan_rows(out, ckpt, "", ("torch:bf16", "openvino:int8"), BASE)
    assert [p.row_id for p in planned] == ["torch-bf16", "openvino-int8"]


def test_unknown_runtime_is_a_config_error_with_a_suggestion():
    with pytest.raises(ConfigError, match="Did you mean 'openvino'"):
        parse_selection(("openvin",))


def test_missing_runtime_module_is_skipped_with_its_name(tmp_path, monkeypatch):
    monkeypatch.setitem(rows.REGISTRY, "onnxruntime", "drifa_edge.runtimes.no_such_module:open_runtime")
    _touch(tmp_path / "onnx" / "prefix.onnx")
    (row,) = plan_rows(tmp_path, None, "no checkpoint", ("onnxruntime:fp32",), BASE)
    assert row.spec is None and "drifa_edge.runtimes.no_such_module is not installed" in row.reason


def test_no_checkpoint_skips_the_torch_rows_with_the_reason(tmp_path, all_modules):
    _touch(tmp_path / "onnx" / "prefix.onnx")
    checkpoint, why = resolve_checkpoint(tmp_path, None, {})
    assert checkpoint is None and "--checkpoint" in why
    planned = _by_id(plan_rows(tmp_path, checkpoint, why, ("authors", "torch"), BASE))
    assert planned["torch-fp32"].reason == why and planned["authors-fp32"].reason == why


def test_checkpoint_found_from_the_export_card(export_folder):
    out, ckpt = export_folder
    assert resolve_checkpoint(out, None, {"source_checkpoint": str(ckpt)}) == (ckpt, "")
    assert resolve_checkpoint(out, None, {"source": {"checkpoint": str(ckpt)}}) == (ckpt, "")
    gone, why = resolve_checkpoint(out, None, {"source_checkpoint": str(ckpt / "gone")})
    assert gone is None and "is gone" in why
    with pytest.raises(ConfigError, match="no model.safetensors"):
        resolve_checkpoint(out, out, {})


def test_spec_round_trips_through_json():
    spec = RowSpec(row_id="x", runtime="torch", precision="fp32", path="/p", files=("a",), samples=(2, 4))
    assert RowSpec.from_json(spec.to_json()) == spec
    with pytest.raises(ConfigError):
        RowSpec(row_id="x", runtime="torch", precision="fp32", path="/p", batches=(0,))


def test_time_cell_keeps_the_cold_first_call_apart(monkeypatch):
    """The first warm-up call (lazy compiles) is reported as first_call_ms, not in the percentiles."""
    import numpy as np

    from drifa_edge.bench import worker
    from drifa_edge.bench.rows import RowSpec

    clock = [0.0]
    durations = iter([5.0, 0.1, 0.1] + [0.2] * 10)  # cold call, 2 more warm-ups, then timed calls

    def mc(images, samples):
        clock[0] += next(durations)

    monkeypatch.setattr(worker.time, "perf_counter", lambda: clock[0])
    spec = RowSpec(row_id="r", runtime="openvino", precision="fp32", path=".", warmup=3, repeats=4)
    cell = worker.time_cell(mc, [np.zeros((1, 3, 8, 8), np.float32)], 30, spec)
    assert cell["first_call_ms"] == pytest.approx(5000.0)
    assert cell["repeats"] == 4 and cell["call_ms"]["p50"] == pytest.approx(200.0)


def test_a_selection_matching_no_row_is_an_error_naming_the_rows(export_folder, all_modules):
    out, ckpt = export_folder
    with pytest.raises(ConfigError, match=r"--runtimes openvino:fp16 selects no row") as e:
        plan_rows(out, ckpt, "", ("openvino:fp16",), BASE)
    assert "openvino:int8" in str(e.value) and e.value.exit_code == 2
    # one good item does not hide a bad one
    with pytest.raises(ConfigError, match="torch:int8"):
        plan_rows(out, ckpt, "", ("torch", "torch:int8"), BASE)
