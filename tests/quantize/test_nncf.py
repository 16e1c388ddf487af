"""OpenVINO INT8 builds with NNCF: they load, stay stochastic, agree with FP32, keep the
MC-mask chain in float, and record where their calibration data came from."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from tests.quantize.conftest import CALIB, ROWS, SUBSET

pytest.importorskip("nncf")
ov = pytest.importorskip("openvino")

# INT8 and FP32 predictions (MC mean with T = 64, and dropout off) must agree on at least
# this share of the 27 synthetic test cases. The tiny model is ~65 % accurate, so some cases
# sit near a decision boundary: measured 0.89-0.96; a broken build falls to about 1/3.
AGREEMENT_MIN = 0.8


def _read(path, graph):
    return ov.Core().read_model(str(path / "openvino-int8" / f"{graph}.xml"))


def _runtime(path, precision):
    from drifa_edge.runtimes.base import RuntimeOptions, open_runtime

    return open_runtime("openvino", path, RuntimeOptions(precision=precision))


def test_int8_build_loads_and_runs(ov_int8, synthetic_cases):
    from drifa_edge.inference.engine import EngineConfig, run_mc

    path, section = ov_int8
    assert section["reused"] is False
    rt = _runtime(path, "int8")
    assert rt.precision == "int8"
    images, _ = synthetic_cases
    probs = run_mc([rt], [x[:3] for x in images], EngineConfig(samples=8))
    for task, p in probs.items():
        assert p.shape == (3, 8, 3), task
        np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)


def test_random_ops_survive_and_mc_stays_stochastic(ov_int8, tiny_export, synthetic_cases):
    from drifa_edge.model.config import dropout_shapes

    path, _ = ov_int8
    rt = _runtime(path, "int8")
    n_dropouts = len(dropout_shapes(rt.card.model))
    ops = collections.Counter(op.get_type_name() for op in _read(path, "suffix").get_ordered_ops())
    assert ops["RandomUniform"] == n_dropouts
    assert ops["FakeQuantize"] > 0
    images, _ = synthetic_cases
    feats = [np.repeat(f[:1], 6, axis=0) for f in rt.run_prefix([x[:1] for x in images])]
    a, b = rt.run_suffix(feats), rt.run_suffix(feats)
    assert not np.allclose(a[0], b[0]), "two MC calls gave identical logits"
    assert np.ptp(a[0], axis=0).max() > 1e-3, "the rows of one call share a mask"


def test_int8_agrees_with_fp32(ov_int8, synthetic_cases):
    from drifa_edge.inference.engine import EngineConfig, run_mc
    from drifa_edge.runtimes.base import RuntimeOptions, open_runtime

    path, _ = ov_int8
    images, _ = synthetic_cases
    mc = EngineConfig(samples=64)
    int8, fp32 = run_mc([_runtime(path, "int8")], images, mc), run_mc([_runtime(path, "fp32")], images, mc)
    det = {
        p: run_mc(
            [open_runtime("openvino", path, RuntimeOptions(precision=p, extra={"dropout": "off"}))],
            images,
            EngineConfig(samples=1),
        )
        for p in ("int8", "fp32")
    }
    for task in int8:
        agree = np.mean(int8[task].mean(1).argmax(-1) == fp32[task].mean(1).argmax(-1))
        assert agree >= AGREEMENT_MIN, f"{task}: MC means agree on {agree:.2f} of cases"
        agree = np.mean(det["int8"][task][:, 0].argmax(-1) == det["fp32"][task][:, 0].argmax(-1))
        assert agree >= AGREEMENT_MIN, f"{task}: dropout-off predictions agree on {agree:.2f} of cases"


def test_mask_chain_stays_float_in_every_suffix_graph(ov_int8):
    from drifa_edge.quantize import scopes

    path, _ = ov_int8
    for graph in ("suffix", "suffix_det", "suffix_masks"):
        model = _read(path, graph)
        sites = scopes.ov_fake_quantize_sites(model)
        masks = set(scopes.ov_mask_nodes(model))
        assert not masks & set(sites), f"{graph}: quantized mask nodes {sorted(masks & set(sites))}"
        kinds = collections.Counter(k for v in sites.values() for k in v)
        assert kinds["Convolution"] > 0 and kinds["MatMul"] > 0, f"{graph}: {kinds}"  # scope "all"
        for op in model.get_ordered_ops():  # no FakeQuantize anywhere on the random path
            if op.get_type_name() == "FakeQuantize":
                src = op.input(0).get_source_output().get_node()
                first = src.input(0).get_source_output().get_node() if src.get_input_size() else src
                weight = src.get_type_name() == "Convert" and first.get_type_name() == "Constant"
                random = src.get_type_name() in ("RandomUniform", "GreaterEqual", "Convert")
                random = random or scopes.is_uniform_parameter(src)
                assert weight or not random, f"{graph}: FakeQuantize on {src.get_friendly_name()}"
    assert len(scopes.ov_mask_nodes(_read(path, "suffix_det"))) == 0


def test_cutting_suffix_det_and_suffix_masks_from_the_mc_graph_is_exact(tiny_export):
    """The surgery that makes suffix_det / suffix_masks from the MC suffix, applied to the
    FP32 graphs, must reproduce the exported FP32 graphs bit for bit."""
    from drifa_edge.artifact.card import read_card
    from drifa_edge.quantize import ir

    core = ov.Core()
    card = read_card(tiny_export)
    fp32 = {
        g: core.read_model(str(tiny_export / "openvino" / f"{g}.xml"))
        for g in ("suffix", "suffix_det", "suffix_masks")
    }
    rng = np.random.default_rng(0)
    feeds = {
        f"feat_{t}": np.maximum(rng.standard_normal((3, 8, 8, 8)), 0).astype(np.float32)
        for t in card.task_names
    }
    uniforms = {
        n: rng.random((3, *s), dtype=np.float32) for n, s in ir.uniform_shapes(fp32["suffix_masks"]).items()
    }
    out = ["logits_derm", "logits_scan"]

    def run(model, x):
        return ir.run_compiled(ir.compile_fp32(core, model), x, out)

    cut = ir.masks_as_inputs(fp32["suffix"], fp32["suffix_masks"])
    for a, b in zip(
        run(cut, {**feeds, **uniforms}), run(fp32["suffix_masks"], {**feeds, **uniforms}), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(
        run(ir.dropout_removed(fp32["suffix"]), feeds), run(fp32["suffix_det"], feeds), strict=True
    ):
        np.testing.assert_array_equal(a, b)


def test_int8_fixed_mask_and_dropout_off_graphs_track_fp32(ov_int8, synthetic_cases):
    """With the same fixed masks (or dropout off), INT8 logits stay closer to FP32 than
    two FP32 mask draws are to each other, on average; the three share one quantization."""
    from drifa_edge.model.config import dropout_shapes
    from drifa_edge.quantize import scopes
    from drifa_edge.runtimes.base import RuntimeOptions, open_runtime

    path, _ = ov_int8
    int8 = _runtime(path, "int8")
    fp32 = _runtime(path, "fp32")
    images, _ = synthetic_cases
    feats = fp32.run_prefix(images)
    rows = feats[0].shape[0]
    rng = np.random.default_rng(0)
    shapes = dropout_shapes(fp32.card.model)
    u1 = [rng.random((rows, *s), dtype=np.float32) for s in shapes]
    u2 = [rng.random((rows, *s), dtype=np.float32) for s in shapes]
    q, f, f_other = (
        int8.run_suffix(feats, u1)[0],
        fp32.run_suffix(feats, u1)[0],
        fp32.run_suffix(feats, u2)[0],
    )
    assert np.abs(q - f).mean() < 0.5 * np.abs(f_other - f).mean()
    assert np.mean(q.argmax(-1) == f.argmax(-1)) >= AGREEMENT_MIN
    det8 = open_runtime("openvino", path, RuntimeOptions(precision="int8", extra={"dropout": "off"}))
    det32 = open_runtime("openvino", path, RuntimeOptions(precision="fp32", extra={"dropout": "off"}))
    a, b = det8.run_suffix(feats)[0], det32.run_suffix(feats)[0]
    np.testing.assert_array_equal(a, det8.run_suffix(feats)[0])  # deterministic
    assert np.abs(a - b).mean() < 0.5 * np.abs(f_other - f).mean()
    sites = {
        g: len(scopes.ov_fake_quantize_sites(_read(path, g)))
        for g in ("suffix", "suffix_det", "suffix_masks")
    }
    assert sites["suffix"] == sites["suffix_masks"] == sites["suffix_det"] > 0, sites


def test_card_records_provenance_and_hashes(ov_int8):
    from drifa_edge.artifact import layout
    from drifa_edge.artifact.card import read_card

    path, section = ov_int8
    card = read_card(path, verify=True)  # every hashed file, INT8 included, matches
    for g in layout.GRAPHS:
        for rel in layout.openvino_files(g, "int8"):
            assert rel in card.files
    recorded = card.export["int8"]["openvino"]
    calib = recorded["calibration"]
    assert len(calib["sha256"]) == 64
    assert calib["subset"] == SUBSET and calib["seed"] == 0 and calib["preset"] == "performance"
    assert calib["nncf"]
    assert recorded["config"]["rows_per_case"] == ROWS
    assert recorded["key"] == section["key"]


def test_same_request_reuses_build(ov_int8):
    from drifa_edge.quantize.config import QuantizeConfig
    from drifa_edge.quantize.nncf import quantize_openvino

    path, section = ov_int8
    again = quantize_openvino(path, CALIB, QuantizeConfig(subset=SUBSET, rows_per_case=ROWS))
    assert again["reused"] is True and again["key"] == section["key"]


def test_other_data_or_settings_change_the_key(ov_int8):
    from drifa_edge.artifact.card import read_card
    from drifa_edge.quantize.calibration_set import load_calibration_set
    from drifa_edge.quantize.config import QuantizeConfig
    from drifa_edge.quantize.nncf import _reusable, build_key

    path, section = ov_int8
    card = read_card(path)
    config = QuantizeConfig(subset=SUBSET, rows_per_case=ROWS)
    same = load_calibration_set(CALIB, card, SUBSET, 0)
    assert build_key(card, same, config) == section["key"]
    other_seed = load_calibration_set(CALIB, card, SUBSET, 1)
    other_size = load_calibration_set(CALIB, card, SUBSET + 1, 0)
    keys = {
        build_key(card, other_seed, config),
        build_key(card, other_size, config),
        build_key(card, same, config.replace(per_channel=False)),
    }
    assert section["key"] not in keys and len(keys) == 3
    assert _reusable(path, card, section["key"])
    assert not _reusable(path, card, next(iter(keys)))


def test_modified_int8_file_is_refused(ov_int8, tmp_path):
    import shutil

    from drifa_edge.errors import ArtifactError

    src, _ = ov_int8
    path = tmp_path / "export"
    shutil.copytree(src, path)
    xml = path / "openvino-int8" / "suffix.xml"
    xml.write_text(xml.read_text().replace("FakeQuantize", "FakeQuantize ", 1))
    with pytest.raises(ArtifactError, match="sha256"):
        _runtime(path, "int8")


def test_seeded_random_ops_pair_two_builds(tiny_export):
    """Fixed graph seeds give the same masks call after call: the basis of the paired
    FP32-vs-INT8 comparisons (sensitivity ranking)."""
    from drifa_edge.artifact import layout
    from drifa_edge.artifact.card import read_card
    from drifa_edge.quantize import ir

    core = ov.Core()
    card = read_card(tiny_export)
    xml = str(tiny_export / layout.openvino_files("suffix")[0])
    rng = np.random.default_rng(0)
    feeds = {layout.feature_name(t): rng.random((3, 8, 8, 8), dtype=np.float32) for t in card.task_names}
    outs = []
    for _ in range(2):
        compiled = ir.compile_fp32(core, ir.seed_random_ops(core.read_model(xml), seed=5))
        outs.append([ir.run_compiled(compiled, feeds, ["logits_derm"])[0] for _ in range(2)])
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    np.testing.assert_array_equal(outs[0][1], outs[1][1])
    assert not np.array_equal(outs[0][0], outs[0][1])
