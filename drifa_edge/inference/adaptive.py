"""Adaptive T (sequential MC dropout): draw a case's MC samples in blocks, stop once its
answer is settled.

The deterministic prefix runs once per case; the suffix then runs ``min_samples`` draws
of every case, and after that ``block`` more draws of each case still running, until the
stopping rule (:mod:`drifa_edge.metrics.sequential`) says the case's class and referral
are settled (or its standard errors are small enough, ``rule``), or T_max draws
(``EngineConfig.samples``) are in. The draws of the cases still running are batched into
runtime calls of at most ``rows_per_call`` rows, so a batch keeps the engine's batching.
It uses only the :class:`~drifa_edge.runtimes.base.Runtime` protocol (run_prefix /
run_suffix / reseed), so it runs on every runtime, in-graph masks (ONNX Runtime,
OpenVINO, TensorRT ``masks="graph"``) included.

An ensemble of K members draws ``block`` samples per member per look; the rule sees all
K*n draws. The stopping decisions use the card's temperature (per member) and referral
thresholds; a task without a finite threshold has only its class decision.

Seeds: on a seedable runtime (torch) with ``case_seeds`` every case's every look restarts
the member's stream from a seed derived from (case seed + k, look), and runs alone, so a
case's draws do not depend on its batch; otherwise one stream per member starts from a
seed derived from ``cfg.seed + k`` (never the fixed-T engine's own stream, so a check of
adaptive against fixed T on torch compares independent draws). Unseedable runtimes draw
fresh masks every call.

``complete=True`` (the drift gate) keeps drawing every case to T_max after its stop, so
that the permutation null of two full T_max runs can be built; the decisions still use
only each case's first ``used`` draws.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from drifa_edge.errors import ConfigError, UnsupportedBackendError, suggest
from drifa_edge.inference.engine import EngineConfig, _check_images, rows_per_call
from drifa_edge.metrics.sequential import RULES, Referral, settled
from drifa_edge.metrics.uncertainty import softmax
from drifa_edge.runtimes.base import Runtime

# cases whose prefix output is held at once (bounded memory; the paper configuration's
# prefix output is ~0.5 MB a case, so 64 cases ~ 32 MB)
CASES_PER_GROUP = 64

STOP_SETTLED = "settled"  # the rule said so before T_max
STOP_MAX = "max_samples"  # T_max reached without the rule settling (a borderline case)


@dataclass(frozen=True)
class AdaptiveConfig:
    """Adaptive T: ``min_samples`` (T_min) draws first, then ``block`` more per look, up to
    the engine's ``samples`` (T_max); ``error_rate`` bounds the stopping rule's predictive
    probability that drawing on to T_max would change the case's class or referral, ``rule`` one of :data:`~drifa_edge.metrics.sequential.RULES`, ``se_tolerance``
    the MC standard error of the ``precision`` rule (probability units)."""

    min_samples: int = 4
    block: int = 3
    error_rate: float = 0.05
    rule: str = "decision"
    se_tolerance: float = 0.02

    def __post_init__(self) -> None:
        if isinstance(self.min_samples, bool) or self.min_samples < 2:
            raise ConfigError(
                f"adaptive min_samples (T_min) must be >= 2 (a spread needs two draws), got {self.min_samples}"
            )
        if isinstance(self.block, bool) or self.block < 1:
            raise ConfigError(f"adaptive block must be >= 1 draw, got {self.block}")
        if not 0.0 < self.error_rate < 1.0:
            raise ConfigError(f"adaptive error_rate must be in (0, 1), e.g. 0.05; got {self.error_rate}")
        if self.rule not in RULES:
            raise ConfigError(
                f"adaptive rule must be one of {RULES}, got {self.rule!r}" + suggest(self.rule, RULES)
            )
        if not self.se_tolerance > 0:
            raise ConfigError(f"adaptive se_tolerance must be > 0, got {self.se_tolerance}")

    def looks(self, max_samples: int) -> tuple[int, ...]:
        """The draw counts at which the rule is asked, ending at ``max_samples`` (T_max)."""
        if max_samples < self.min_samples:
            raise ConfigError(
                f"T_max (--samples {max_samples}) is below the adaptive T_min ({self.min_samples}); "
                "raise --samples or lower --min-samples"
            )
        return (*range(self.min_samples, max_samples, self.block), max_samples)

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> AdaptiveConfig:
        return dataclasses.replace(self, **changes)


@dataclass
class AdaptiveRun:
    """What :func:`run_adaptive` drew. ``logits`` per task (B, K, T_max, C): member k's
    draws of case i in ``[i, k, :drawn[i]]`` (NaN beyond); ``used`` (B,) the draws per
    member the case's answer rests on, ``stop`` (B,) why it stopped
    (:data:`STOP_SETTLED` or :data:`STOP_MAX`), ``rows`` (B,) suffix rows run for it
    (K * drawn), ``embedding`` (B, D) the MC mean of the pooled embedding over the used
    draws of member 0 (with ``embedding=True``)."""

    logits: dict[str, np.ndarray]
    temperatures: dict[str, list[float]]
    used: np.ndarray
    drawn: np.ndarray
    stop: list[str]
    rows: np.ndarray
    embedding: np.ndarray | None = None

    def probabilities(self, task: str, i: int) -> np.ndarray:
        """Case ``i``'s used draws of ``task``, (K*used, C), member blocks in order."""
        z = self.logits[task][i, :, : self.used[i]]  # (K, n, C)
        return np.concatenate([softmax(z[k], t) for k, t in enumerate(self.temperatures[task])])

    def full_logits(self) -> dict[str, np.ndarray]:
        """Every draw, (B, K*T_max, C) member-major as :func:`~drifa_edge.inference.engine.run_mc_logits`
        gives; needs every case drawn to T_max (``complete=True``)."""
        t_max = next(iter(self.logits.values())).shape[2]
        if not (self.drawn == t_max).all():
            raise ConfigError("full_logits needs a run with complete=True (every case drawn to T_max)")
        return {t: z.reshape(z.shape[0], -1, z.shape[-1]) for t, z in self.logits.items()}


def _seed(base: int, look: int) -> int:
    """A seed for (base, look) that no fixed-T stream starts from."""
    return int(np.random.SeedSequence([base, look, 0xADA]).generate_state(1)[0])


def run_adaptive(
    runtimes: Sequence[Runtime],
    images: Sequence[np.ndarray],
    cfg: EngineConfig,
    adaptive: AdaptiveConfig,
    referral: Mapping[str, Referral],
    case_seeds: Sequence[int] | None = None,
    complete: bool = False,
    embedding: bool = False,
) -> AdaptiveRun:
    """Adaptive-T MC inference of B cases: see the module docstring.

    ``images`` as for :func:`~drifa_edge.inference.engine.run_mc`; ``referral`` per task the
    metric and threshold the referral decision is made on. With ``cfg.apply_temperature``
    False the rule sees untempered softmax. Raises what the runtimes raise; ConfigError for
    a T_max below T_min, UnsupportedBackendError for ``embedding`` on a runtime without it."""
    if not runtimes:
        raise ConfigError("the engine needs at least one runtime (ensemble member)")
    if embedding and not hasattr(runtimes[0], "run_suffix_embedding"):
        raise UnsupportedBackendError(
            f"runtime {runtimes[0].name!r} does not return the pooled embedding; use torch, onnxruntime or openvino"
        )
    batch = _check_images(runtimes[0], images)
    card = runtimes[0].card
    names = card.task_names
    for rt in runtimes[1:]:
        if rt.card.task_names != names:
            raise ConfigError(f"ensemble members disagree on tasks: {rt.card.task_names} vs {names}")
        _check_images(rt, images)
    T = cfg.samples
    looks = adaptive.looks(T)
    temps = {
        t: [rt.card.temperature_of(t) if cfg.apply_temperature else 1.0 for rt in runtimes] for t in names
    }
    K = len(runtimes)
    run = AdaptiveRun(
        logits={t.name: np.full((batch, K, T, t.num_classes), np.nan, np.float32) for t in card.model.tasks},
        temperatures=temps,
        used=np.full(batch, T, dtype=np.int64),
        drawn=np.zeros(batch, dtype=np.int64),
        stop=[STOP_MAX] * batch,
        rows=np.zeros(batch, dtype=np.int64),
    )
    emb_sum: np.ndarray | None = None
    seedable = case_seeds is not None and all(rt.seedable for rt in runtimes)
    if case_seeds is not None and len(case_seeds) != batch:
        raise ConfigError(f"case_seeds has {len(case_seeds)} seeds for {batch} cases")
    if not seedable and cfg.seed is not None:
        for k, rt in enumerate(runtimes):
            rt.reseed(_seed(cfg.seed + k, 0))
    for lo in range(0, batch, CASES_PER_GROUP):
        group = np.arange(lo, min(batch, lo + CASES_PER_GROUP))
        feats = [rt.run_prefix([x[group] for x in images]) for rt in runtimes]  # per member: M x (G, ...)
        active = np.ones(group.size, dtype=bool)
        previous = 0
        for j, n in enumerate(looks):
            draw = active if not complete else np.ones_like(active)
            for k, rt in enumerate(runtimes):
                rows = rows_per_call(cfg, rt.card.model, rt.precision)
                if seedable:
                    for g in np.flatnonzero(draw):
                        rt.reseed(_seed(int(case_seeds[group[g]]) + k, j))
                        e = _draw(rt, feats[k], np.array([g]), n - previous, rows, embedding and k == 0)
                        _store(run, group, np.array([g]), k, previous, n, *e)
                        emb_sum = _add_embedding(emb_sum, run, group, np.array([g]), previous, n, e[1])
                else:
                    sel = np.flatnonzero(draw)
                    e = _draw(rt, feats[k], sel, n - previous, rows, embedding and k == 0)
                    _store(run, group, sel, k, previous, n, *e)
                    emb_sum = _add_embedding(emb_sum, run, group, sel, previous, n, e[1])
            run.drawn[group[draw]] = n
            run.rows[group[draw]] += K * (n - previous)
            previous = n
            if n == T:
                break
            idx = np.flatnonzero(active)
            if idx.size == 0:
                continue
            probs = {
                t: _member_probs(run.logits[t][group[idx], :, :n], temps[t]) for t in names
            }  # (A, K*n, C)
            done = settled(
                probs, referral, max_samples=T, rule=adaptive.rule, error_rate=adaptive.error_rate,
                tolerance=adaptive.se_tolerance,
            )  # fmt: skip
            for g in idx[done]:
                run.used[group[g]] = n
                run.stop[group[g]] = STOP_SETTLED
            active[idx[done]] = False
            if not complete and not active.any():
                break
    if embedding and emb_sum is not None:
        run.embedding = emb_sum / run.used[:, None]
    return run


def _member_probs(z: np.ndarray, temps: Sequence[float]) -> np.ndarray:
    """(A, K, n, C) logits -> (A, K*n, C) probabilities, member k with its temperature."""
    return np.concatenate([softmax(z[:, k], t) for k, t in enumerate(temps)], axis=1)


def _draw(rt: Runtime, feats: list[np.ndarray], sel: np.ndarray, m: int, rows: int, embedding: bool):
    """``m`` suffix rows for each case ``sel`` (indices into the group), case-major, in calls
    of at most ``rows`` rows: (logits per task (len(sel)*m, C), embeddings or None)."""
    tiled = [np.repeat(f[sel], m, axis=0) for f in feats]  # (len(sel)*m, ...)
    total = tiled[0].shape[0]
    logits: list[list[np.ndarray]] = []
    embs: list[np.ndarray] = []
    for start in range(0, total, rows):
        chunk = [f[start : start + rows] for f in tiled]
        if embedding:
            z, e = rt.run_suffix_embedding(chunk)
            embs.append(e)
        else:
            z = rt.run_suffix(chunk)
        logits.append(z)
    per_task = [np.concatenate([c[t] for c in logits]) for t in range(len(logits[0]))]
    return per_task, (np.concatenate(embs) if embedding else None)


def _store(run: AdaptiveRun, group, sel, k: int, previous: int, n: int, logits, _emb) -> None:
    m = n - previous
    for t, z in zip(run.logits, logits, strict=True):
        expected = (sel.size * m, run.logits[t].shape[-1])
        if z.shape != expected:
            raise ConfigError(
                f"runtime returned logits of shape {z.shape} for task {t!r}, expected {expected}"
            )
        run.logits[t][group[sel], k, previous:n] = z.reshape(sel.size, m, -1)


def _add_embedding(emb_sum, run: AdaptiveRun, group, sel, previous: int, n: int, emb):
    """Sum the embeddings of the draws that count (up to each case's ``used``, which is
    T_max until it stops: a case's later draws under ``complete`` are not added)."""
    if emb is None:
        return emb_sum
    m = n - previous
    if emb_sum is None:
        emb_sum = np.zeros((run.used.size, emb.shape[1]), np.float64)
    per_case = emb.reshape(sel.size, m, -1)
    for i, g in enumerate(group[sel]):
        if run.stop[g] == STOP_MAX:  # still running (or never stopped): these draws count
            emb_sum[g] += per_case[i].sum(axis=0)
    return emb_sum
