"""Target profiles: loading, validation, row ranges and optimization-profile shapes (no GPU)."""

from __future__ import annotations

import numpy as np
import pytest

from drifa_edge.errors import ConfigError
from drifa_edge.export.tensorrt import (
    TensorRTProfile,
    graph_inputs,
    load_profile,
    profile_shapes,
    row_range,
    targets_dir,
)


def test_shipped_targets_load():
    desktop, jetson, dla = (load_profile(t) for t in ("desktop-cuda", "jetson-orin", "jetson-orin-dla"))
    assert (desktop.rows_min, desktop.rows_opt, desktop.rows_max) == (1, 30, 240)
    assert (jetson.rows_min, jetson.rows_opt, jetson.rows_max) == (1, 30, 60)
    assert desktop.dla_core == jetson.dla_core == -1
    assert dla.dla_core == 0 and dla.gpu_fallback and dla.static
    assert desktop.default_precision == "fp16"


def test_profile_from_a_path(tmp_path):
    path = tmp_path / "lab-gpu.toml"
    path.write_text("[tensorrt]\nrows_opt = 16\nrows_max = 64\n")
    p = load_profile(path)
    assert p.target == "lab-gpu" and (p.rows_min, p.rows_opt, p.rows_max) == (1, 16, 64)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"rows_min": 40}, "rows_min <= rows_opt"),
        ({"rows_opt": 300}, "rows_opt <= rows_max"),
        ({"rows_min": 0}, "1 <= rows_min"),
        ({"workspace_mb": 0}, "workspace_mb must be > 0"),
        ({"dla_core": -2}, "dla_core must be -1"),
        ({"dla_core": 0}, "DLA does not support dynamic shapes"),
        ({"builder_optimization_level": 6}, "0..5"),
        ({"rows_opt": 30.0}, "must be an integer"),
        ({"fp16": "yes"}, "true or false"),
    ],
)
def test_invalid_profiles_are_refused(changes, message):
    with pytest.raises(ConfigError, match=message):
        TensorRTProfile(target="t", **changes)


def test_dla_profile_needs_static_rows_but_then_is_valid():
    p = TensorRTProfile(target="t", rows_min=8, rows_opt=8, rows_max=8, dla_core=1)
    assert p.static and p.dla_core == 1


def test_unknown_key_is_refused_with_a_suggestion(tmp_path):
    path = tmp_path / "typo.toml"
    path.write_text("[tensorrt]\nrows_maxx = 64\n")
    with pytest.raises(ConfigError, match="rows_maxx.*Did you mean 'rows_max'"):
        load_profile(path)


def test_target_without_tensorrt_section(tmp_path, monkeypatch):
    (tmp_path / "intel-cpu.toml").write_text("[openvino]\nhint = 'latency'\n")
    monkeypatch.setenv("DRIFA_TARGETS_DIR", str(tmp_path))
    assert targets_dir() == tmp_path
    with pytest.raises(ConfigError, match="no \\[tensorrt\\] section"):
        load_profile("intel-cpu")


def test_unknown_target_lists_the_known_ones():
    with pytest.raises(ConfigError, match="Did you mean 'jetson-orin'"):
        load_profile("jetson-orn")


def test_bad_toml_is_a_config_error(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[tensorrt\nrows_opt = 3\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_profile(path)


# ---------------------------------------------------------------- row ranges


def test_suffix_rows_are_the_profile_rows():
    p = load_profile("desktop-cuda")
    assert row_range(p, "suffix", 30) == (1, 30, 240)
    assert row_range(p, "suffix_masks", 7) == (1, 30, 240)


@pytest.mark.parametrize(
    "samples, expected", [(30, (1, 1, 9)), (8, (1, 3, 31)), (1, (1, 30, 240)), (500, (1, 1, 2))]
)
def test_prefix_rows_are_cases_per_call(samples, expected):
    assert row_range(load_profile("desktop-cuda"), "prefix", samples) == expected


def test_static_profile_gives_a_static_prefix():
    dla = load_profile("jetson-orin-dla")
    assert row_range(dla, "prefix", 30) == (1, 1, 1)
    assert row_range(dla, "prefix", 10) == (3, 3, 3)


@pytest.mark.parametrize("samples", [1, 7, 30, 45])
@pytest.mark.parametrize("rows", [1, 30, 32, 60, 240])
def test_prefix_max_covers_the_engine_chunking(samples, rows):
    """Independent of row_range's formula: chunk B*T rows as the MC engine does
    (case-major, ``rows`` per call) and count the cases one suffix call touches."""
    profile = TensorRTProfile(target="t", rows_min=1, rows_opt=min(rows, 30), rows_max=rows)
    batch = 11
    case_of_row = np.arange(batch * samples) // samples
    most = max(len(np.unique(case_of_row[s : s + rows])) for s in range(0, batch * samples, rows))
    assert row_range(profile, "prefix", samples)[2] >= most


def test_row_range_rejects_bad_arguments():
    p = load_profile("desktop-cuda")
    with pytest.raises(ConfigError, match="graph must be one of"):
        row_range(p, "suffix_det", 30)
    with pytest.raises(ConfigError, match="samples"):
        row_range(p, "prefix", 0)


# ---------------------------------------------------------------- shapes vs the exported graphs


def _onnx_inputs(path):
    import onnx

    model = onnx.load(str(path))
    return {
        i.name: tuple(d.dim_value if d.HasField("dim_value") else -1 for d in i.type.tensor_type.shape.dim)
        for i in model.graph.input
    }


@pytest.mark.parametrize("graph", ["prefix", "suffix", "suffix_masks"])
def test_profile_shapes_match_the_onnx_graphs(tiny_export, graph):
    """The card-derived shapes must equal the exported graph's inputs (dynamic batch axis)."""
    from drifa_edge.artifact.card import read_card

    card = read_card(tiny_export)
    profile = load_profile("jetson-orin")
    shapes = profile_shapes(card, profile, graph, samples=30)
    onnx_inputs = _onnx_inputs(tiny_export / "onnx" / f"{graph}.onnx")
    assert set(shapes) == set(onnx_inputs)
    lo, opt, hi = row_range(profile, graph, 30)
    for name, (mn, op, mx) in shapes.items():
        assert onnx_inputs[name][0] == -1, "the batch axis must be dynamic"
        assert mn[1:] == op[1:] == mx[1:] == onnx_inputs[name][1:]
        assert (mn[0], op[0], mx[0]) == (lo, opt, hi)


def test_graph_inputs_of_the_prefix(tiny_export):
    from drifa_edge.artifact.card import read_card

    assert graph_inputs(read_card(tiny_export), "prefix") == {
        "image_derm": (3, 32, 32),
        "image_xray": (1, 32, 32),
    }
