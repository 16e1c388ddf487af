"""Batched MC-dropout inference over any runtime.

One call runs B cases x T samples: the deterministic prefix once per case, its
output tiled T times, the stochastic suffix on the B*T rows in chunks of at most
``rows_per_call`` rows per runtime call (bounded memory; ~30 rows per call is the
sweet spot measured on CPUs, 480 was 2-3x slower per case). Rows are (case,
sample) pairs in case-major order; :func:`rows_per_call` cuts chunks at whole cases
(or equal shares of one case when T rows do not fit in a call), so every chunk of a
batch but the last has the same row count. The prefix output of a case is computed
once and kept until its last row has run. T is a
run-time parameter. An ensemble of K members contributes K*T samples per case,
all of them combined. Softmax with the card's per-task temperature is applied
here, the same way for every runtime.

Seeds: each member's mask stream is restarted from ``seed + k`` at the start of
a call (or from ``case_seeds[i] + k`` at the start of each case). For a seedable
runtime (torch) the same inputs, seeds, T, rows per call and member order give
bit-identical masks and outputs; a different chunking consumes the stream
differently and gives different (equally valid) masks.
Runtimes whose random ops live inside the graph (ONNX Runtime, OpenVINO) are
not seedable: ``reseed`` is a no-op there and every call draws fresh masks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from drifa_edge.errors import BadInputError, ConfigError, UnsupportedBackendError
from drifa_edge.metrics.uncertainty import softmax
from drifa_edge.model.config import ModelConfig, dropout_shapes
from drifa_edge.runtimes.base import Runtime

if TYPE_CHECKING:
    from drifa_edge.inference.adaptive import AdaptiveConfig

# Peak working memory of one suffix row, in multiples of the largest dropout
# input of all branches together (the dropout keeps u, the mask and its output;
# MFA's HIFA keeps four sigmoid maps and their sum; plus the block's own
# activations). Measured on the paper configuration with the torch runtime: peak
# RSS grows 4.1 MB per extra row (4.5 MB with channels_last), and one case at
# T = 30 (prefix, tiled features, 30 rows) raised the peak by 173 MB = 5.8 MB a
# row, against 0.5 MB for the two largest dropout inputs; 16 (8 MB) leaves a margin.
_ACTIVATION_FACTOR = 16


@dataclass(frozen=True)
class EngineConfig:
    samples: int = 30  # T, MC samples per member
    seed: int | None = 0  # restarts each member's mask stream (where the runtime allows)
    max_rows: int = 32  # suffix rows per runtime call
    prefix_once: bool = True  # False: the authors' way of tiling the images, prefix run T times
    apply_temperature: bool = True
    memory_mb: float | None = None  # optional budget for one suffix call; lowers max_rows to fit
    # adaptive T (inference.adaptive): stop a case's draws once settled; ``samples`` is then T_max
    adaptive: AdaptiveConfig | None = None

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise ConfigError(f"samples (T) must be >= 1, got {self.samples}")
        if self.max_rows < 1:
            raise ConfigError(f"max_rows must be >= 1, got {self.max_rows}")
        if self.memory_mb is not None and not self.memory_mb > 0:
            raise ConfigError(f"memory_mb must be > 0 (or None), got {self.memory_mb}")
        if self.adaptive is not None:
            self.adaptive.looks(self.samples)  # T_max (samples) >= T_min, else ConfigError

    def replace(self, **changes) -> EngineConfig:
        return dataclasses.replace(self, **changes)


def suffix_row_bytes(model: ModelConfig, bytes_per_value: int = 4) -> int:
    """Estimated peak memory of one suffix row (one case, one MC sample)."""
    shapes = dropout_shapes(model)
    per_branch = max(c * h * w for c, h, w in shapes[:-1])  # first dropout of a branch is the largest
    return _ACTIVATION_FACTOR * bytes_per_value * per_branch * len(model.tasks)


def rows_per_call(cfg: EngineConfig, model: ModelConfig, precision: str = "fp32") -> int:
    """Suffix rows per runtime call: ``max_rows``, lowered to fit ``memory_mb`` if set, then
    to whole cases: a multiple of T (``samples``) when at least T rows fit, else an equal
    share of one case's T rows (T = 50, 32 rows: 25 + 25, not 32 + 18). So the calls of a
    batch have one row count (the last call may hold fewer cases) and a runtime that compiles
    per call shape (OpenVINO) compiles once; 32-row chunks of T = 30 alternated 32 and 24 rows
    and cost a second compiled suffix per stream (README, "Memory")."""
    rows = cfg.max_rows
    if cfg.memory_mb is not None:
        per_row = suffix_row_bytes(model, 2 if precision in ("fp16", "bf16") else 4)
        fit = int(cfg.memory_mb * 2**20 // per_row)
        if fit < 1:
            raise ConfigError(
                f"memory budget {cfg.memory_mb} MB is below one suffix row "
                f"(~{per_row / 2**20:.3g} MB for this model); raise it or drop memory_mb"
            )
        rows = min(rows, fit)
    T = cfg.samples
    if rows >= T:
        return rows // T * T
    calls_per_case = -(-T // rows)
    return -(-T // calls_per_case)


def _check_images(runtime: Runtime, images: Sequence[np.ndarray]) -> int:
    tasks = runtime.card.model.tasks
    if len(images) != len(tasks):
        raise BadInputError(
            f"the model has {len(tasks)} modalities {[t.name for t in tasks]}, got {len(images)} image arrays"
        )
    batch = images[0].shape[0]
    size = runtime.card.model.image_size
    for t, x in zip(tasks, images, strict=True):
        if x.shape != (batch, t.channels, size, size):
            raise BadInputError(
                f"modality {t.name!r}: expected shape {(batch, t.channels, size, size)}, got {x.shape}"
            )
        if not np.isfinite(x).all():
            raise BadInputError(f"modality {t.name!r}: input contains NaN or Inf")
    return batch


class _PrefixCache:
    """Prefix output of the cases a chunk needs, computed in blocks, dropped once passed."""

    def __init__(self, runtime: Runtime, images: Sequence[np.ndarray], block: int) -> None:
        self.runtime, self.images, self.block = runtime, images, block
        self.batch = images[0].shape[0]
        self.feats: dict[int, list[np.ndarray]] = {}

    def tiled(self, case_idx: np.ndarray) -> list[np.ndarray]:
        cases, counts = np.unique(case_idx, return_counts=True)  # case-major: sorted, contiguous
        missing = [int(c) for c in cases if int(c) not in self.feats]
        if missing:
            lo = missing[0]
            hi = max(missing[-1] + 1, min(self.batch, lo + self.block))
            out = self.runtime.run_prefix([x[lo:hi] for x in self.images])
            for j, c in enumerate(range(lo, hi)):
                self.feats[c] = [f[j] for f in out]
        for c in [c for c in self.feats if c < cases[0]]:
            del self.feats[c]
        n_mod = len(self.images)
        return [
            np.repeat(np.stack([self.feats[int(c)][m] for c in cases]), counts, axis=0)  # (rows, ...)
            for m in range(n_mod)
        ]


def _segments(batch: int, T: int, seed: int | None, case_seeds: Sequence[int] | None):
    """(first row, end row, seed) of each run of rows that shares one mask stream."""
    if case_seeds is None:
        return [(0, batch * T, seed)]
    if len(case_seeds) != batch:
        raise ConfigError(f"case_seeds has {len(case_seeds)} seeds for {batch} cases")
    return [(i * T, (i + 1) * T, int(s)) for i, s in enumerate(case_seeds)]


def run_member_logits(
    runtime: Runtime,
    images: Sequence[np.ndarray],
    cfg: EngineConfig,
    case_seeds: Sequence[int] | None = None,
) -> list[np.ndarray]:
    """Logits per task, shape (B, T, K_t), of one member.

    Without ``case_seeds`` one mask stream (``cfg.seed``) runs through all B*T rows.
    With them every case restarts the stream from its own seed and its rows never
    share a runtime call with another case's, so a case's samples do not depend on
    the batch it is in (for small T this costs some batching).
    """
    return _run_member(runtime, images, cfg, case_seeds, embedding=False)[0]


def run_member_embedding(
    runtime: Runtime,
    images: Sequence[np.ndarray],
    cfg: EngineConfig,
    case_seeds: Sequence[int] | None = None,
) -> tuple[list[np.ndarray], np.ndarray]:
    """:func:`run_member_logits` plus the pooled embedding averaged over the T samples,
    (B, M*W3): the suffix's extra output, for the OOD score. The runtime must have
    ``run_suffix_embedding`` (torch, ONNX Runtime, OpenVINO)."""
    logits, draws = run_member_embedding_draws(runtime, images, cfg, case_seeds)
    return logits, draws.mean(axis=1)  # (B, M*W3)


def run_member_embedding_draws(
    runtime: Runtime,
    images: Sequence[np.ndarray],
    cfg: EngineConfig,
    case_seeds: Sequence[int] | None = None,
) -> tuple[list[np.ndarray], np.ndarray]:
    """:func:`run_member_embedding` before the MC average: the pooled embedding of every
    draw, (B, T, M*W3) float32. The drift gate's noise model swaps single draws between two
    runs, so it needs them one by one (:mod:`drifa_edge.drift.noise`)."""
    if not hasattr(runtime, "run_suffix_embedding"):
        raise UnsupportedBackendError(
            f"runtime {runtime.name!r} does not return the pooled embedding, so it cannot give an "
            "OOD score; use --runtime torch, onnxruntime or openvino"
        )
    logits, emb = _run_member(runtime, images, cfg, case_seeds, embedding=True)
    return logits, emb


def _run_member(
    runtime, images, cfg, case_seeds, embedding: bool
) -> tuple[list[np.ndarray], np.ndarray | None]:
    batch = _check_images(runtime, images)
    T = cfg.samples
    rows = rows_per_call(cfg, runtime.card.model, runtime.precision)
    out = [np.empty((batch * T, t.num_classes), np.float32) for t in runtime.card.model.tasks]
    emb: np.ndarray | None = None
    cache = _PrefixCache(runtime, images, block=max(1, rows // T)) if cfg.prefix_once else None
    for first, end, seed in _segments(batch, T, cfg.seed, case_seeds):
        runtime.reseed(seed)
        for start in range(first, end, rows):
            stop = min(start + rows, end)
            case_idx = np.arange(start, stop) // T  # (rows,)
            if cache is not None:
                feats = cache.tiled(case_idx)
            else:
                feats = runtime.run_prefix([x[case_idx] for x in images])
            if embedding:
                logits, e = runtime.run_suffix_embedding(feats)
                if emb is None:
                    emb = np.empty((batch * T, e.shape[1]), np.float32)
                emb[start:stop] = e  # (rows, M*W3)
            else:
                logits = runtime.run_suffix(feats)
            for k, z in enumerate(logits):
                if z.shape != (stop - start, out[k].shape[1]):
                    raise BadInputError(
                        f"runtime {runtime.name!r} returned logits of shape {z.shape} for task {k}, "
                        f"expected {(stop - start, out[k].shape[1])}"
                    )
                out[k][start:stop] = z
    draws = None if emb is None else emb.reshape(batch, T, -1)  # (B, T, M*W3)
    return [o.reshape(batch, T, -1) for o in out], draws


def run_mc_logits(
    runtimes: Sequence[Runtime],
    images: Sequence[np.ndarray],
    cfg: EngineConfig,
    case_seeds: Sequence[int] | None = None,
) -> dict[str, np.ndarray]:
    """Raw logits per task, shape (B, K*T, C): every member's T samples, no temperature.

    Member k uses seed ``cfg.seed + k`` (``case_seeds[i] + k``) so members never
    share a mask stream.
    """
    return _run_members(runtimes, images, cfg, case_seeds, embedding=False)[0]


def _run_members(
    runtimes: Sequence[Runtime],
    images: Sequence[np.ndarray],
    cfg: EngineConfig,
    case_seeds: Sequence[int] | None,
    embedding: bool,
) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
    """(raw logits per task (B, K*T, C), each member's MC-mean embedding (B, D) if asked)."""
    if not runtimes:
        raise ConfigError("the engine needs at least one runtime (ensemble member)")
    names = runtimes[0].card.task_names
    samples: dict[str, list[np.ndarray]] = {n: [] for n in names}
    embeddings = []
    for k, rt in enumerate(runtimes):
        if rt.card.task_names != names:
            raise ConfigError(f"ensemble members disagree on tasks: {rt.card.task_names} vs {names}")
        member_cfg = cfg.replace(seed=None if cfg.seed is None else cfg.seed + k)
        member_seeds = None if case_seeds is None else [s + k for s in case_seeds]
        if embedding:
            logits, emb = run_member_embedding(rt, images, member_cfg, member_seeds)
            embeddings.append(emb)
        else:
            logits = run_member_logits(rt, images, member_cfg, member_seeds)
        for name, z in zip(names, logits, strict=True):
            samples[name].append(z)
    return {n: np.concatenate(v, axis=1) for n, v in samples.items()}, embeddings


def _probabilities(
    logits: dict[str, np.ndarray], runtimes: Sequence[Runtime], cfg: EngineConfig
) -> dict[str, np.ndarray]:
    """Softmax of (B, K*T, C) logits, member k's block divided by member k's temperature."""
    out = {}
    for name, z in logits.items():
        parts = np.split(z, len(runtimes), axis=1)
        out[name] = np.concatenate(
            [
                softmax(p, rt.card.temperature_of(name) if cfg.apply_temperature else 1.0)
                for p, rt in zip(parts, runtimes, strict=True)
            ],
            axis=1,
        )
    return out


def run_mc(
    runtimes: Sequence[Runtime],
    images: Sequence[np.ndarray],
    cfg: EngineConfig,
    case_seeds: Sequence[int] | None = None,
) -> dict[str, np.ndarray]:
    """Class probabilities per task, shape (B, K*T, C), with the card's temperature.

    Every member's logits are divided by that member's own temperature.
    """
    return _probabilities(run_mc_logits(runtimes, images, cfg, case_seeds), runtimes, cfg)


def run_mc_embeddings(
    runtimes: Sequence[Runtime],
    images: Sequence[np.ndarray],
    cfg: EngineConfig,
    case_seeds: Sequence[int] | None = None,
) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
    """:func:`run_mc` plus every member's MC-mean pooled embedding, a list of K arrays
    (B, M*W3) in member order, for the OOD score (each member has its own density)."""
    logits, embeddings = _run_members(runtimes, images, cfg, case_seeds, embedding=True)
    return _probabilities(logits, runtimes, cfg), embeddings


def run_mc_embedding(
    runtime: Runtime,
    images: Sequence[np.ndarray],
    cfg: EngineConfig,
    case_seeds: Sequence[int] | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """:func:`run_mc` of one model plus its MC-mean pooled embedding (B, M*W3), for the OOD score."""
    probs, (embedding,) = run_mc_embeddings([runtime], images, cfg, case_seeds)
    return probs, embedding


def returns_embedding(runtime: Runtime) -> bool:
    """Whether ``runtime`` gives the pooled embedding: it has ``run_suffix_embedding`` and,
    where it can tell (``has_embedding``), its suffix graph or engine has the output."""
    return hasattr(runtime, "run_suffix_embedding") and bool(getattr(runtime, "has_embedding", True))
