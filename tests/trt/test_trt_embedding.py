"""The TensorRT runtime's OOD path on the CPU: ``run_suffix_embedding`` reads the engine's
``embedding`` output, the engine averages it over the T samples, and an engine built
before the output existed is refused with the fix (no GPU, no TensorRT: the runtime
object is assembled around a stand-in engine that computes known outputs with numpy).
TensorRT itself is NOT run here (see tests/trt/test_trt_engine_gpu.py on a GPU machine).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from drifa_edge.artifact import layout
from drifa_edge.errors import ArtifactError
from drifa_edge.inference.engine import EngineConfig, returns_embedding, run_mc_embedding
from drifa_edge.model.config import ModelConfig, TaskSpec
from drifa_edge.runtimes import tensorrt as trt_rt

TASKS = (TaskSpec("derm", ("a", "b", "c")), TaskSpec("xray", ("n", "p"), channels=1))
W = 4  # embedding columns per task


class _Card:
    def __init__(self) -> None:
        self.model = ModelConfig(tasks=TASKS, image_size=32, width=0.125, dropout=0.25)
        self.task_names = [t.name for t in TASKS]

    def temperature_of(self, task: str) -> float:
        return 1.0


class _StandInEngine:
    """What ``_Engine.run`` returns: a dict of named float32 outputs, rows as fed. The
    embedding of row r is the mean of its features plus a per-call counter (a 'mask draw')."""

    def __init__(self, outputs: list[str]) -> None:
        self.outputs = outputs
        self.calls = 0

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls += 1
        feats = [feeds[layout.feature_name(t.name)] for t in TASKS]
        rows = len(feats[0])
        base = np.concatenate([np.repeat(f.reshape(rows, -1).mean(1, keepdims=True), W, 1) for f in feats], 1)
        emb = base + np.arange(rows, dtype=np.float32)[:, None]  # row r of a call: +r
        out = {layout.logits_name(t.name): np.zeros((rows, len(t.classes)), np.float32) for t in TASKS}
        if layout.EMBEDDING_NAME in self.outputs:
            out[layout.EMBEDDING_NAME] = emb.astype(np.float32)
        return out


def _runtime(with_embedding: bool) -> trt_rt.TensorRTRuntime:
    rt = object.__new__(trt_rt.TensorRTRuntime)  # no GPU: skip __init__, set what it sets
    rt.card, rt.folder, rt.precision, rt.masks, rt.seedable = _Card(), Path("engines"), "fp16", "graph", False
    rt.device = "cuda:0"
    rt._feats = [layout.feature_name(t.name) for t in TASKS]
    rt._logits = [layout.logits_name(t.name) for t in TASKS]
    names = [*rt._logits] + ([layout.EMBEDDING_NAME] if with_embedding else [])
    rt.suffix = _StandInEngine(names)
    rt.run_prefix = lambda images: [x.astype(np.float32) for x in images]  # identity prefix
    return rt


def test_the_engine_embedding_output_is_returned_and_mc_averaged():
    rt = _runtime(with_embedding=True)
    assert rt.has_embedding and returns_embedding(rt)
    rng = np.random.default_rng(0)
    images = [rng.random((3, 3, 32, 32), dtype=np.float32), rng.random((3, 1, 32, 32), dtype=np.float32)]
    T = 4
    _, emb = run_mc_embedding(rt, images, EngineConfig(samples=T, seed=None, max_rows=64, prefix_once=False))
    # independent: case i's rows are i*T .. i*T+T-1 of one call (12 rows <= max_rows), so its
    # MC mean is its feature mean + the mean of those row numbers
    for i in range(3):
        expected = [images[k][i].mean() for k in range(2)]
        row_mean = np.mean(np.arange(i * T, (i + 1) * T))
        np.testing.assert_allclose(emb[i, :W], expected[0] + row_mean, rtol=1e-5)
        np.testing.assert_allclose(emb[i, W:], expected[1] + row_mean, rtol=1e-5)
    logits = rt.run_suffix([x[:2] for x in images])
    assert [z.shape for z in logits] == [(2, 3), (2, 2)]  # run_suffix still returns logits only


def test_an_engine_without_the_embedding_output_is_refused_with_the_fix():
    rt = _runtime(with_embedding=False)
    assert not rt.has_embedding and not returns_embedding(rt)
    images = [np.zeros((1, 3, 32, 32), np.float32), np.zeros((1, 1, 32, 32), np.float32)]
    with pytest.raises(ArtifactError, match="re-export the checkpoint; then rebuild the TensorRT engines"):
        rt.run_suffix_embedding(images)
