"""Conformance suite: every installed runtime, the same tiny model, inputs and checks.

The reference is computed independently of the runtime protocol: the PyTorch module's
full ``forward`` (not its prefix/suffix split), eager FP32. Tolerance 1e-4 on
probabilities (the round-off observed is ~1e-8, see drifa_edge.export.checks).
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from drifa_edge.errors import ArtifactError, BadInputError, MissingDependencyError
from drifa_edge.inference.engine import EngineConfig, run_mc, softmax
from drifa_edge.model.config import dropout_shapes
from drifa_edge.runtimes.base import REGISTRY, RuntimeOptions, open_runtime, probe_runtime

RUNTIMES = sorted(REGISTRY)  # every registered runtime; a new one joins the suite by registering
# runtimes whose artifact the tiny fixture does not build here (a GPU build), and why
NOT_BUILT = {"tensorrt": "needs TensorRT engines built on a GPU (tests/trt builds and checks them there)"}
TOL = 1e-4
# the file each runtime loads, flipped by the tamper test
TAMPER_TARGET = {
    "torch": "model.safetensors",
    "onnxruntime": "onnx/suffix.onnx",
    "openvino": "openvino/suffix.bin",
}


def test_every_registered_runtime_has_a_tamper_target_or_a_reason():
    assert set(REGISTRY) <= set(TAMPER_TARGET) | set(NOT_BUILT)


@pytest.fixture(params=RUNTIMES)
def runtime_name(request) -> str:
    info = probe_runtime(request.param)
    if not info.get("available"):
        pytest.skip(f"{request.param} not installed: {info.get('reason')}")
    if request.param in NOT_BUILT:
        pytest.skip(f"{request.param}: {NOT_BUILT[request.param]}")
    return request.param


def artifact_of(name, tiny_artifacts):
    checkpoint, export = tiny_artifacts
    return checkpoint if name == "torch" else export


def opened(name, tiny_artifacts, dropout="mc", **kwargs):
    options = RuntimeOptions(threads=1, extra={"dropout": dropout}, **kwargs)
    return open_runtime(name, artifact_of(name, tiny_artifacts), options)


@pytest.fixture(scope="module")
def shared(tiny_artifacts):
    """Runtimes opened once per (name, dropout mode) and reused (OpenVINO compiles take seconds)."""
    cache = {}

    def get(name: str, dropout: str = "mc"):
        if (name, dropout) not in cache:
            cache[name, dropout] = opened(name, tiny_artifacts, dropout)
        return cache[name, dropout]

    return get


def images(card, batch: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    size = card.model.image_size
    return [rng.standard_normal((batch, t.channels, size, size)).astype(np.float32) for t in card.model.tasks]


@pytest.fixture(scope="module")
def reference_model(tiny_artifacts):
    from drifa_edge.artifact.checkpoint import load_checkpoint

    model, card = load_checkpoint(tiny_artifacts[0])
    return model, card


def torch_probs(reference_model, xs, uniforms=None) -> list[np.ndarray]:
    """Independent reference: the module's full forward, dropout off or fixed masks."""
    import torch

    from drifa_edge.model.dropout import dropouts, set_dropout_mode

    model, card = reference_model
    set_dropout_mode(model, "off" if uniforms is None else "external")
    if uniforms is not None:
        for layer, u in zip(dropouts(model), uniforms, strict=True):
            layer.uniform = torch.from_numpy(u)
    with torch.inference_mode():
        logits = model([torch.from_numpy(x) for x in xs])
    set_dropout_mode(model, "mc")
    return [softmax(z.numpy(), card.temperature_of(t)) for z, t in zip(logits, card.task_names, strict=True)]


def probs(rt, logits) -> list[np.ndarray]:
    return [softmax(z, rt.card.temperature_of(t)) for z, t in zip(logits, rt.card.task_names, strict=True)]


def test_probe_reports_version_and_devices(runtime_name):
    info = probe_runtime(runtime_name)
    assert info["available"] and info["version"] and info["devices"]


def test_card_travels_with_the_artifact(runtime_name, shared):
    rt = shared(runtime_name)
    assert rt.card.task_names == ("derm", "xray")
    assert rt.card.model.tasks[0].classes == ("nevus", "melanoma", "keratosis")
    assert rt.card.temperature_of("derm") == 1.5
    assert rt.card.preprocess["xray"].channels == 1
    assert rt.precision == "fp32" and isinstance(rt.device, str) and rt.device
    assert rt.seedable == (runtime_name == "torch")


@pytest.mark.parametrize("batch", [1, 7])
def test_deterministic_probabilities_match_torch(runtime_name, shared, reference_model, batch):
    rt = shared(runtime_name, "off")
    xs = images(rt.card, batch)
    feats = rt.run_prefix(xs)
    assert [f.shape[0] for f in feats] == [batch, batch]
    got = probs(rt, rt.run_suffix(feats))
    want = torch_probs(reference_model, xs)
    for g, w, k in zip(got, want, (3, 2), strict=True):
        assert g.shape == (batch, k)
        assert np.abs(g - w).max() <= TOL


def test_rows_do_not_depend_on_the_batch(runtime_name, shared):
    rt = shared(runtime_name, "off")
    xs = images(rt.card, 7)
    full = rt.run_suffix(rt.run_prefix(xs))
    alone = rt.run_suffix(rt.run_prefix([x[3:4] for x in xs]))
    for f, a in zip(full, alone, strict=True):
        np.testing.assert_allclose(f[3:4], a, atol=1e-5)


def test_mc_is_stochastic_per_call_and_per_row(runtime_name, shared):
    rt = shared(runtime_name)
    feats = [np.repeat(f, 6, axis=0) for f in rt.run_prefix(images(rt.card, 1))]  # one case, 6 rows
    first, second = rt.run_suffix(feats), rt.run_suffix(feats)
    for a, b in zip(first, second, strict=True):
        assert np.abs(a - b).max() > 1e-4  # no constant-folded masks between calls
        assert (np.abs(a[1:] - a[:1]).max(axis=1) > 1e-6).all()  # every repeated row got its own mask


def test_fixed_masks_match_torch(runtime_name, shared, reference_model):
    rt = shared(runtime_name)
    xs = images(rt.card, 5, seed=1)
    rng = np.random.default_rng(2)
    uniforms = [rng.random((5, *s), dtype=np.float32) for s in dropout_shapes(rt.card.model)]
    got = probs(rt, rt.run_suffix(rt.run_prefix(xs), uniforms))
    want = torch_probs(reference_model, xs, uniforms)
    for g, w in zip(got, want, strict=True):
        assert np.abs(g - w).max() <= TOL
    # the masks matter: other uniforms give other outputs
    other = [np.roll(u, 1, axis=0) for u in uniforms]
    assert np.abs(probs(rt, rt.run_suffix(rt.run_prefix(xs), other))[0] - got[0]).max() > 1e-4


def test_fixed_masks_reject_wrong_shapes(runtime_name, shared):
    rt = shared(runtime_name)
    feats = rt.run_prefix(images(rt.card, 2))
    shapes = dropout_shapes(rt.card.model)
    with pytest.raises((BadInputError, ValueError, RuntimeError)):
        rt.run_suffix(feats, [np.zeros((2, *s), np.float32) for s in shapes[:-1]])


def test_wrong_number_of_inputs_is_a_clear_error(runtime_name, shared):
    if runtime_name == "torch":
        pytest.skip("the torch runtime relies on the engine's input validation")
    rt = shared(runtime_name)
    with pytest.raises(BadInputError, match="expected 2 image arrays"):
        rt.run_prefix(images(rt.card, 1)[:1])


def test_engine_run_mc_shapes(runtime_name, shared):
    rt = shared(runtime_name)
    out = run_mc([rt], images(rt.card, 3), EngineConfig(samples=5, max_rows=8))
    assert out["derm"].shape == (3, 5, 3) and out["xray"].shape == (3, 5, 2)
    for p in out.values():
        assert np.isfinite(p).all()
        np.testing.assert_allclose(p.sum(axis=-1), 1.0, atol=1e-6)
        assert p.std(axis=1).max() > 0  # MC samples of a case differ


def test_two_opened_runtimes_draw_different_masks(runtime_name, tiny_artifacts):
    """Ensemble members live in one process; they must not share a mask stream."""
    a, b = opened(runtime_name, tiny_artifacts), opened(runtime_name, tiny_artifacts)
    feats = a.run_prefix(images(a.card, 2))
    assert np.abs(a.run_suffix(feats)[0] - b.run_suffix(feats)[0]).max() > 1e-4


def test_tampered_file_is_refused(runtime_name, tiny_artifacts, tmp_path):
    copy = tmp_path / "artifact"
    shutil.copytree(artifact_of(runtime_name, tiny_artifacts), copy)
    target = copy / TAMPER_TARGET[runtime_name]
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit in the middle of the weights
    target.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="sha256"):
        open_runtime(runtime_name, copy, RuntimeOptions(threads=1))


def test_missing_dependency_names_the_extra(runtime_name, tiny_artifacts, monkeypatch):
    import sys

    module, extra = {
        "torch": ("torch", "torch"),
        "onnxruntime": ("onnxruntime", "onnx"),
        "openvino": ("openvino", "openvino"),
    }[runtime_name]
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    with pytest.raises(MissingDependencyError, match=rf"drifa-edge\[{extra}\]"):
        open_runtime(runtime_name, artifact_of(runtime_name, tiny_artifacts))
