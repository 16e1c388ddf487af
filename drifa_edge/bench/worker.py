"""Run ONE benchmark row in this process and print its result as one JSON line.

``python -m drifa_edge.bench.worker --spec SPEC`` (SPEC = the JSON of a
:class:`~drifa_edge.bench.rows.RowSpec`, or ``@file`` holding it). The parent runs
each row in its own subprocess so a crash, a hang or a runtime's memory cannot
spoil the other rows, and ``ru_maxrss`` is this row's own peak.

Per row: probe the runtime, open the artifact (timed: the load a user waits for),
then for every (T, batch) cell: warm-up calls, then timed calls of B cases x T MC
samples on random inputs of the card's shapes. With ``eval_path`` it then runs
the ``--data`` cases once and saves the MC probabilities (npz) for the parent's
metrics and drift gate. The authors' baseline runs T sequential eager passes of
the whole torch model per call instead of the engine.

Testing hook: ``DRIFA_BENCH_CRASH=row_id[:exit|:segv|:hang|:raise]`` (comma separated)
makes that row die in the chosen way right after start.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from drifa_edge.bench.rows import AUTHORS, RowSpec
from drifa_edge.errors import MissingDependencyError, UnsupportedBackendError
from drifa_edge.runtimes.threads import apply_wait_policy

RESULT_MARKER = "DRIFA_BENCH_ROW "
CRASH_ENV = "DRIFA_BENCH_CRASH"
MC = Callable[..., dict[str, np.ndarray]]  # (images, T[, seed]) -> {task: (B, T, C)}


def peak_rss_mb() -> float:
    """This process's peak resident set size so far.

    Linux: VmHWM of /proc/self/status, the high-water mark of this process's own memory
    map. ``ru_maxrss`` is not used there: it survives fork + exec, so a worker started by a
    large parent (the demo, after training) would report the parent's peak.
    Elsewhere: ru_maxrss (KiB on Linux, bytes on macOS)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _crash_hook(row_id: str) -> None:
    for item in filter(None, os.environ.get(CRASH_ENV, "").split(",")):
        name, _, how = item.partition(":")
        if name != row_id:
            continue
        sys.stderr.write(f"{CRASH_ENV}: crashing row {row_id} ({how or 'exit'}) on purpose\n")
        sys.stderr.flush()
        if how == "segv":
            os.kill(os.getpid(), signal.SIGSEGV)
        if how == "hang":
            time.sleep(3600)
        if how == "raise":
            raise RuntimeError(f"{CRASH_ENV} asked row {row_id} to raise")
        os._exit(3)


def _open_engine_row(spec: RowSpec) -> tuple[MC, dict[str, Any], Any]:
    """Open the row's artifact in its runtime; the MC function runs the batched engine."""
    from drifa_edge.inference.engine import EngineConfig, run_mc
    from drifa_edge.runtimes.base import RuntimeOptions, open_runtime

    options = RuntimeOptions(
        precision=spec.precision,
        device=spec.device,
        threads=spec.threads,
        hint=spec.hint,
        streams=spec.streams,
        extra=dict(spec.extra),  # e.g. the TensorRT target
    )
    runtime = open_runtime(spec.runtime, spec.path, options)

    def mc(images: Sequence[np.ndarray], samples: int, seed: int | None = spec.seed) -> dict[str, np.ndarray]:
        return run_mc([runtime], images, EngineConfig(samples=samples, seed=seed, max_rows=spec.max_rows))

    mc.runtime = runtime  # type: ignore[attr-defined] - the adaptive-T timing needs the runtime itself
    info = {"device": runtime.device, "precision": runtime.precision}
    if hasattr(runtime, "streams"):  # OpenVINO: parallel requests per suffix call
        info["streams"] = runtime.streams
    return mc, info, runtime.card


def _open_authors_row(spec: RowSpec) -> tuple[MC, dict[str, Any], Any]:
    """The authors' way: the eager torch model called T times in a row, softmax after each pass."""
    import torch

    from drifa_edge.artifact.checkpoint import load_checkpoint
    from drifa_edge.inference.engine import softmax
    from drifa_edge.model.dropout import set_dropout_mode

    if spec.threads:
        torch.set_num_threads(spec.threads)
    model, card = load_checkpoint(spec.path)
    model.eval()  # BatchNorm in inference mode, MC dropout stays on
    names = card.task_names

    def mc(images: Sequence[np.ndarray], samples: int, seed: int | None = spec.seed) -> dict[str, np.ndarray]:
        set_dropout_mode(model, "mc", seed=seed)
        xs = [torch.from_numpy(np.ascontiguousarray(x)) for x in images]
        passes = []
        with torch.inference_mode():
            for _ in range(samples):
                passes.append([z.numpy() for z in model(xs)])  # tasks x (B, C)
        return {
            name: softmax(np.stack([p[k] for p in passes], axis=1), card.temperature_of(name))  # (B, T, C)
            for k, name in enumerate(names)
        }

    return mc, {"device": "cpu", "precision": "fp32"}, card


def random_inputs(card: Any, cases: int, seed: int) -> list[np.ndarray]:
    """Normalised-looking random images of the card's shapes (timing does not depend on content)."""
    rng = np.random.default_rng(seed)
    size = card.model.image_size
    return [rng.standard_normal((cases, t.channels, size, size), dtype=np.float32) for t in card.model.tasks]


def percentiles_ms(seconds: Sequence[float]) -> dict[str, float]:
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {
        "p50": float(p50),
        "p95": float(p95),
        "p99": float(p99),
        "mean": float(ms.mean()),
        "min": float(ms.min()),
    }


def time_cell(mc: MC, images: Sequence[np.ndarray], samples: int, spec: RowSpec) -> dict[str, Any]:
    """Warm-up, then timed calls of one (T, batch) cell; per-call latency and throughput."""
    batch = images[0].shape[0]
    first = None  # the cold call: lazy compiles (OpenVINO's static shapes) and first-touch costs
    for _ in range(spec.warmup):
        t0 = time.perf_counter()
        mc(images, samples)
        first = time.perf_counter() - t0 if first is None else first
    seconds: list[float] = []
    started = time.perf_counter()
    while len(seconds) < spec.repeats:
        t0 = time.perf_counter()
        mc(images, samples)
        seconds.append(time.perf_counter() - t0)
        if len(seconds) >= spec.min_repeats and time.perf_counter() - started > spec.budget_s:
            break
    cell = cell_summary(samples, batch, seconds)
    cell["first_call_ms"] = None if first is None else first * 1000.0
    return cell


def cell_summary(samples: int, batch: int, seconds: Sequence[float]) -> dict[str, Any]:
    """Latency percentiles and throughput of one (T, batch) cell from its timed calls."""
    return {
        "samples": samples,
        "batch": batch,
        "repeats": len(seconds),
        "call_ms": percentiles_ms(seconds),
        "case_ms_p50": float(np.median(seconds)) * 1000.0 / batch,
        "cases_per_s": batch / float(np.mean(seconds)),
        "seconds": [float(s) for s in seconds],
    }


def run_eval(mc: MC, spec: RowSpec, card: Any) -> dict[str, Any]:
    """Run the --data cases once and save their MC probabilities (npz, no pickle) and the card."""
    with np.load(spec.eval_path, allow_pickle=False) as data:
        images = [data[f"x{k}"] for k in range(len(card.model.tasks))]
    n = images[0].shape[0]
    parts: dict[str, list[np.ndarray]] = {name: [] for name in card.task_names}
    t0 = time.perf_counter()
    for start in range(0, n, spec.eval_batch):
        chunk = [x[start : start + spec.eval_batch] for x in images]
        # one seed per chunk: repeatable, yet no two chunks share masks
        probs = mc(chunk, spec.eval_samples, spec.eval_seed * 1_000_003 + start)
        for name in parts:
            parts[name].append(probs[name].astype(np.float32))
    seconds = time.perf_counter() - t0
    out = Path(spec.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{spec.row_id}-seed{spec.eval_seed}"
    probs_path = out / f"{stem}.npz"
    np.savez(probs_path, **{name: np.concatenate(p) for name, p in parts.items()})
    card_path = out / f"{stem}.card.json"
    card_path.write_text(card.to_json())
    return {
        "cases": n,
        "samples": spec.eval_samples,
        "seed": spec.eval_seed,
        "seconds": seconds,
        "probs": str(probs_path),
        "card": str(card_path),
    }


def time_adaptive(runtime: Any, spec: RowSpec, card: Any) -> dict[str, Any]:
    """Adaptive T against fixed T = ``spec.samples[0]``, one case per call, the two
    alternating case by case (so a load change hits both): per-case latency percentiles,
    suffix rows per case, the per-case speed-up, and whether the two runs' decisions (class
    and referral per task, independent draws) agree, next to how often a second fixed-T run
    (untimed) agrees with the first: the noise floor. Cases: the --data cases, else random."""
    from drifa_edge.inference.adaptive import AdaptiveConfig, run_adaptive
    from drifa_edge.inference.engine import EngineConfig, run_mc
    from drifa_edge.metrics.sequential import Referral
    from drifa_edge.metrics.uncertainty import summarize

    adaptive = AdaptiveConfig(**spec.adaptive)
    T = spec.samples[0]
    cfg = EngineConfig(samples=T, seed=spec.seed, max_rows=spec.max_rows)
    if spec.eval_path:
        with np.load(spec.eval_path, allow_pickle=False) as data:
            images = [data[f"x{k}"][: spec.adaptive_cases] for k in range(len(card.model.tasks))]
        source = "data"
    else:
        images, source = random_inputs(card, spec.adaptive_cases, spec.seed), "random"
    referral = {t: Referral(r.metric, r.threshold) for t, r in card.referral.items()}

    def decisions(probs: dict[str, np.ndarray]) -> tuple:
        out = []
        for task, p in probs.items():
            s = summarize(p)
            r = referral.get(task)
            refer = None if r is None else bool(s[r.metric][0] > r.threshold)
            out.append((int(s["predicted"][0]), refer))
        return tuple(out)

    first = [x[:1] for x in images]
    for _ in range(spec.warmup):  # complete=True draws every look to T_max: every call size a
        run_mc([runtime], first, cfg)  # case can make is compiled before the timed cases
        run_adaptive([runtime], first, cfg, adaptive, referral, complete=True)
    per_case = []
    for i in range(images[0].shape[0]):
        case = [x[i : i + 1] for x in images]
        t0 = time.perf_counter()
        fixed = run_mc([runtime], case, cfg)
        fixed_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        run = run_adaptive([runtime], case, cfg, adaptive, referral)
        adaptive_s = time.perf_counter() - t0
        probs = {t: run.probabilities(t, 0)[None] for t in card.task_names}
        second = run_mc([runtime], case, cfg.replace(seed=None if cfg.seed is None else cfg.seed + 1))
        per_case.append(
            {
                "rows": int(run.rows[0]),
                "stop": run.stop[0],
                "fixed_ms": fixed_s * 1e3,
                "adaptive_ms": adaptive_s * 1e3,
                "same_decisions": decisions(fixed) == decisions(probs),
                # the noise floor: a second fixed-T run (other draws, untimed) against the first
                "same_decisions_two_fixed": decisions(fixed) == decisions(second),
            }
        )
    rows = np.array([c["rows"] for c in per_case])
    fixed_ms = np.array([c["fixed_ms"] for c in per_case])
    adaptive_ms = np.array([c["adaptive_ms"] for c in per_case])
    same = np.array([c["same_decisions"] for c in per_case])
    same_fixed = np.array([c["same_decisions_two_fixed"] for c in per_case])
    speedup = fixed_ms / adaptive_ms
    values, counts = np.unique(rows, return_counts=True)
    return {
        "config": dict(spec.adaptive),
        "max_samples": T,
        "cases": len(per_case),
        "inputs": source,
        "fixed_ms": percentiles_ms(fixed_ms / 1e3),
        "adaptive_ms": percentiles_ms(adaptive_ms / 1e3),
        "rows_per_case_mean": float(rows.mean()),
        "rows_histogram": {str(int(v)): int(c) for v, c in zip(values, counts, strict=True)},
        "row_ratio": float(T / rows.mean()),
        "speedup_median": float(np.median(speedup)),
        "speedup_of_means": float(fixed_ms.mean() / adaptive_ms.mean()),
        "same_decisions": float(same.mean()),
        "same_decisions_two_fixed": float(same_fixed.mean()),
        "speedup_median_same_decisions": float(np.median(speedup[same])) if same.any() else None,
        "per_case": per_case,
    }


def size_on_disk(files: Sequence[str]) -> int:
    return sum(Path(f).stat().st_size for f in files if Path(f).is_file())


def run_row(spec: RowSpec) -> dict[str, Any]:
    """Measure one row; returns the JSON-able result (status ok / skipped)."""
    result: dict[str, Any] = {"row_id": spec.row_id, "runtime": spec.runtime, "precision": spec.precision}
    result["loadavg_start"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    probe_name = "torch" if spec.runtime == AUTHORS else spec.runtime
    from drifa_edge.runtimes.base import probe_runtime

    t0 = time.perf_counter()
    probe = probe_runtime(probe_name)
    result["import_s"] = time.perf_counter() - t0
    result["version"] = str(probe.get("version", ""))
    if not probe.get("available"):
        return {
            **result,
            "status": "skipped",
            "reason": f"{probe_name} unavailable: {probe.get('reason', '?')}",
        }
    t0 = time.perf_counter()
    try:
        opener = _open_authors_row if spec.runtime == AUTHORS else _open_engine_row
        mc, info, card = opener(spec)
    except (MissingDependencyError, UnsupportedBackendError) as e:
        return {**result, "status": "skipped", "reason": str(e)}
    result.update(info, load_s=time.perf_counter() - t0, size_bytes=size_on_disk(spec.files))
    result["rss_after_load_mb"] = peak_rss_mb()
    if not spec.eval_only:
        cells = []
        for samples in spec.samples:
            for batch in spec.batches:
                cells.append(time_cell(mc, random_inputs(card, batch, spec.seed), samples, spec))
        result["sweep"] = cells
        result["peak_rss_mb"] = peak_rss_mb()  # before the --data pass, which holds the whole set
        result["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    if spec.adaptive is not None and spec.runtime != AUTHORS and not spec.eval_only:
        result["adaptive"] = time_adaptive(mc.runtime, spec, card)
    if spec.eval_path:
        result["eval"] = run_eval(mc, spec, card)
    result["status"] = "ok"
    result["reason"] = ""
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m drifa_edge.bench.worker", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--spec", required=True, help="RowSpec JSON, or @FILE holding it")
    args = parser.parse_args(argv)
    text = Path(args.spec[1:]).read_text() if args.spec.startswith("@") else args.spec
    spec = RowSpec.from_json(text)
    if spec.runtime != AUTHORS:  # the baseline keeps OpenMP's defaults (runner.run_worker)
        apply_wait_policy()  # before a row imports torch (its OpenMP reads it then)
    _crash_hook(spec.row_id)
    try:
        result = run_row(spec)
    except Exception as e:  # reported as this row's failure; the parent carries on with the others
        traceback.print_exc()
        result = {
            "row_id": spec.row_id,
            "runtime": spec.runtime,
            "precision": spec.precision,
            "status": "failed",
            "reason": f"{type(e).__name__}: {e}",
        }
    sys.stdout.write(RESULT_MARKER + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0 if result["status"] != "failed" else 1


if __name__ == "__main__":
    sys.exit(main())
