"""Adaptive T (drifa_edge.inference.adaptive) on every runtime path with the tiny model:
torch, ONNX Runtime and OpenVINO (in-graph masks), and the TensorRT runtime's code path on
CPU (its prefix/suffix engines replaced by ONNX Runtime sessions that pad rows to an
optimization profile the way a TensorRT engine does)."""

from __future__ import annotations

import numpy as np
import pytest

from drifa_edge.artifact import layout
from drifa_edge.errors import ConfigError
from drifa_edge.inference.adaptive import STOP_MAX, STOP_SETTLED, AdaptiveConfig, run_adaptive
from drifa_edge.inference.engine import EngineConfig
from drifa_edge.metrics.sequential import Referral, settled
from drifa_edge.runtimes.base import RuntimeOptions, open_runtime, probe_runtime

T_MAX = 10
SETTLE_AT_ONCE = AdaptiveConfig(min_samples=4, block=3, rule="precision", se_tolerance=1e3)
NEVER_SETTLE = AdaptiveConfig(min_samples=4, block=3, rule="precision", se_tolerance=1e-12)


def _images(card, batch: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    size = card.model.image_size
    return [rng.standard_normal((batch, t.channels, size, size)).astype(np.float32) for t in card.model.tasks]


class _OrtEngine:
    """A TensorRT engine's interface (inputs, input_shape, run) over an ONNX Runtime session,
    chunked and padded to a [rows_min, rows_max] profile like ``tensorrt._Engine.run``."""

    def __init__(self, path, rows_min: int = 8, rows_max: int = 16) -> None:
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.rows_min, self.rows_max, self.calls = rows_min, rows_max, []

    def input_shape(self, name):
        return tuple(next(i.shape for i in self.session.get_inputs() if i.name == name)[1:])

    def run(self, feeds):
        from drifa_edge.runtimes import tensorrt as trt_rt

        rows = len(next(iter(feeds.values())))
        parts = {n: [] for n in self.outputs}
        for start, stop, padded in trt_rt.plan_chunks(rows, self.rows_min, self.rows_max):
            chunk = {n: trt_rt.pad_rows(feeds[n][start:stop], padded) for n in self.inputs}
            self.calls.append(padded)
            for n, out in zip(self.outputs, self.session.run(self.outputs, chunk), strict=True):
                parts[n].append(out[: stop - start])
        return {n: np.concatenate(p) for n, p in parts.items()}

    def close(self):
        self.session = None


def _tensorrt_on_cpu(export_dir):
    """A TensorRTRuntime with in-graph masks whose engines are ONNX Runtime sessions."""
    pytest.importorskip("onnxruntime")
    from drifa_edge.artifact.card import read_card
    from drifa_edge.runtimes.tensorrt import TensorRTRuntime

    card = read_card(export_dir, verify=False)
    rt = object.__new__(TensorRTRuntime)  # __init__ needs TensorRT and a GPU; the rest is plain Python
    tasks = [t.name for t in card.model.tasks]
    rt.card, rt.folder, rt.build = card, export_dir, {"precision": "fp32"}
    rt.precision, rt.masks, rt.seedable, rt.device = "fp32", "graph", False, "cuda:0"
    rt.prefix = _OrtEngine(export_dir / "onnx" / "prefix.onnx")
    rt.suffix = _OrtEngine(export_dir / "onnx" / "suffix.onnx")
    rt._images = [layout.image_name(t) for t in tasks]
    rt._feats = [layout.feature_name(t) for t in tasks]
    rt._logits = [layout.logits_name(t) for t in tasks]
    rt._uniforms = []
    rt._rng = np.random.default_rng()
    return rt


@pytest.fixture(scope="module", params=["torch", "onnxruntime", "openvino", "tensorrt-cpu"])
def runtime(request, tiny_artifacts):
    checkpoint, export = tiny_artifacts
    if request.param == "tensorrt-cpu":
        rt = _tensorrt_on_cpu(export)
    else:
        info = probe_runtime(request.param)
        if not info.get("available"):
            pytest.skip(f"{request.param} not installed: {info.get('reason')}")
        if request.param == "openvino" and not (export / "openvino").is_dir():
            pytest.skip("the tiny export has no OpenVINO build (openvino missing at export time)")
        path = checkpoint if request.param == "torch" else export
        rt = open_runtime(request.param, path, RuntimeOptions(threads=1))
    yield rt
    rt.close()


def test_settled_cases_stop_at_the_first_look_on_every_runtime(runtime):
    images = _images(runtime.card, 3)
    run = run_adaptive([runtime], images, EngineConfig(samples=T_MAX, max_rows=8), SETTLE_AT_ONCE, {})
    assert run.used.tolist() == [4, 4, 4] and run.drawn.tolist() == [4, 4, 4]
    assert run.rows.tolist() == [4, 4, 4] and run.stop == [STOP_SETTLED] * 3
    for task, z in run.logits.items():
        assert np.isfinite(z[:, 0, :4]).all() and np.isnan(z[:, 0, 4:]).all(), task
        # MC dropout is alive in every runtime: a case's draws differ
        assert (z[:, 0, :4].std(axis=1) > 0).any(axis=-1).all(), task
        assert run.probabilities(task, 1).shape == (4, z.shape[-1])


def test_unsettled_cases_draw_to_t_max_and_complete_keeps_every_draw(runtime):
    images = _images(runtime.card, 2, seed=1)
    cfg = EngineConfig(samples=T_MAX, max_rows=8)
    run = run_adaptive([runtime], images, cfg, NEVER_SETTLE, {})
    assert run.used.tolist() == [T_MAX] * 2 and run.stop == [STOP_MAX] * 2
    done = run_adaptive([runtime], images, cfg, SETTLE_AT_ONCE, {}, complete=True)
    assert done.used.tolist() == [4, 4] and done.drawn.tolist() == [T_MAX] * 2
    for task, z in done.full_logits().items():
        assert z.shape == (
            2,
            T_MAX,
            runtime.card.model.tasks[runtime.card.task_names.index(task)].num_classes,
        )
        assert np.isfinite(z).all()
    with pytest.raises(ConfigError, match="complete=True"):
        run_adaptive([runtime], images, cfg, SETTLE_AT_ONCE, {}).full_logits()


def test_tensorrt_path_pads_small_blocks_to_the_engine_profile(tiny_artifacts):
    rt = _tensorrt_on_cpu(tiny_artifacts[1])
    run = run_adaptive([rt], _images(rt.card, 1), EngineConfig(samples=T_MAX), NEVER_SETTLE, {})
    assert run.used.tolist() == [T_MAX]
    # looks at 4, 7, 10: blocks of 4, 3 and 3 rows, each padded up to the profile minimum of 8
    assert rt.suffix.calls == [8, 8, 8]


def _torch(tiny_artifacts):
    pytest.importorskip("torch")
    return open_runtime("torch", tiny_artifacts[0], RuntimeOptions(threads=1))


def test_each_stop_is_at_the_first_look_the_rule_accepts(tiny_artifacts):
    """Bookkeeping against the rule itself: a case stopped at n is settled on its first n
    draws and was not at the look before; a case at T_max was never settled."""
    rt = _torch(tiny_artifacts)
    images = _images(rt.card, 6, seed=2)
    adaptive = AdaptiveConfig(min_samples=4, block=3, error_rate=0.2)
    referral = {t: Referral("mutual_information", 0.05) for t in rt.card.task_names}
    run = run_adaptive([rt], images, EngineConfig(samples=T_MAX), adaptive, referral, complete=True)
    looks = adaptive.looks(T_MAX)
    for i in range(6):

        def ok(n, i=i):
            probs = {t: _probs(run, t, i, n) for t in referral}
            return bool(settled(probs, referral, max_samples=T_MAX, error_rate=0.2)[0])

        before = [n for n in looks[:-1] if n < run.used[i]]
        assert not any(ok(n) for n in before)
        if run.stop[i] == STOP_SETTLED:
            assert ok(int(run.used[i]))
    rt.close()


def _probs(run, task, i, n):
    from drifa_edge.metrics.uncertainty import softmax

    z = run.logits[task][i, :, :n]  # (K, n, C)
    return np.concatenate([softmax(z[k], t) for k, t in enumerate(run.temperatures[task])])[None]


def test_seeded_torch_draws_of_a_case_do_not_depend_on_its_batch(tiny_artifacts):
    rt = _torch(tiny_artifacts)
    images = _images(rt.card, 3, seed=3)
    cfg = EngineConfig(samples=T_MAX)
    batch = run_adaptive([rt], images, cfg, NEVER_SETTLE, {}, case_seeds=[11, 12, 13])
    alone = run_adaptive([rt], [x[1:2] for x in images], cfg, NEVER_SETTLE, {}, case_seeds=[12])
    for task in batch.logits:
        # same masks; the batched prefix differs from the lone one only by float round-off
        np.testing.assert_allclose(batch.logits[task][1], alone.logits[task][0], rtol=1e-4, atol=1e-5)
        assert not np.array_equal(batch.logits[task][0], batch.logits[task][1])
    rt.close()


def test_an_ensemble_draws_a_block_per_member(tiny_artifacts):
    a, b = _torch(tiny_artifacts), _torch(tiny_artifacts)
    run = run_adaptive([a, b], _images(a.card, 2), EngineConfig(samples=T_MAX), SETTLE_AT_ONCE, {})
    assert run.used.tolist() == [4, 4] and run.rows.tolist() == [8, 8]
    assert run.probabilities(a.card.task_names[0], 0).shape[0] == 8  # K * used
    a.close()
    b.close()
