"""MC-dropout inference on the CPU: the authors' way against the engine, in one run.

One case = one image per modality (paper configuration: two RGB 128x128 inputs,
widths 64..512, random weights), T = 30 MC samples.

- authors: T sequential eager full forward passes at batch 1, contiguous layout
  (what the notebook does with ``model(x, training=True)`` in a loop);
- engine: ``inference.engine.run_mc`` on the torch runtime: the deterministic
  prefix once per case, T folded into the batch of the stochastic suffix, with
  and without channels_last (the faster one is the headline).

Timings are interleaved (authors, engine, engine without channels_last, ...) so
that load from other processes hits every method alike; the medians after
warm-up give ms per case and the ratio. Throughput is measured for 16 cases in
one call of the faster engine variant (for the authors' way it is 1 / time per
case: it runs cases one after another anyway). Peak memory is the growth of peak RSS in a fresh child
process per method, over its state after loading the model. Dropout off, both
ways must give the same logits (checked, max |diff| reported).

    python benchmarks/mc_inference.py                 # writes benchmarks/results/mc_inference.json
    python benchmarks/mc_inference.py --quick --out /tmp/x.json   # tiny model, smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from drifa_edge.artifact.card import default_card
from drifa_edge.artifact.checkpoint import save_checkpoint
from drifa_edge.inference.engine import EngineConfig, run_mc
from drifa_edge.model.config import ModelConfig, paper_config
from drifa_edge.model.drifa import build_model
from drifa_edge.model.dropout import set_dropout_mode
from drifa_edge.runtimes.base import RuntimeOptions, open_runtime
from drifa_edge.runtimes.cpu import cpu_summary as cpu_record

RESULTS = Path(__file__).resolve().parent / "results" / "mc_inference.json"
TARGET_RATIO = 3.0


def model_config(quick: bool) -> ModelConfig:
    if quick:
        return ModelConfig(tasks=paper_config().tasks, image_size=32, width=0.125)
    return paper_config()  # two RGB tasks (7 and 8 classes), 128 px, widths 64..512


def make_checkpoint(cfg: ModelConfig, folder: Path) -> Path:
    torch.manual_seed(0)
    save_checkpoint(build_model(cfg).eval(), default_card(cfg), folder)
    return folder


def case_images(cfg: ModelConfig, batch: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    s = cfg.image_size
    return [rng.standard_normal((batch, t.channels, s, s)).astype(np.float32) for t in cfg.tasks]


def authors_model(checkpoint: Path, threads: int | None):
    """The eager model as the notebook runs it: contiguous layout, fresh masks each pass."""
    from drifa_edge.artifact.checkpoint import load_checkpoint

    if threads:
        torch.set_num_threads(threads)
    model, _ = load_checkpoint(checkpoint)
    set_dropout_mode(model, "mc", seed=0)
    return model


def run_authors(model, images: list[np.ndarray], samples: int) -> list[np.ndarray]:
    """T sequential full passes per case at batch 1; logits (B, T, C) per task."""
    out = [[] for _ in images]
    with torch.inference_mode():
        for i in range(images[0].shape[0]):
            xs = [torch.from_numpy(x[i : i + 1]) for x in images]
            per_task = [[] for _ in images]
            for _ in range(samples):
                for k, z in enumerate(model(xs)):
                    per_task[k].append(z.numpy())
            for k in range(len(images)):
                out[k].append(np.concatenate(per_task[k])[None])
    return [np.concatenate(o) for o in out]


def open_engine(
    checkpoint: Path, threads: int | None, channels_last: bool, dropout: str = "mc", precision: str = "fp32"
):
    extra = {"channels_last": channels_last, "dropout": dropout}
    return open_runtime(
        "torch", checkpoint, RuntimeOptions(precision=precision, threads=threads, extra=extra)
    )


def native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def interleaved(fns: dict, repeats: int, warmup: int) -> dict[str, list[float]]:
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(timed(fn))
    return times


def equivalence(checkpoint: Path, cfg: ModelConfig, threads: int | None) -> float:
    """Max |logit difference| between the two ways with dropout off (must be ~0)."""
    model = authors_model(checkpoint, threads)
    set_dropout_mode(model, "off")
    x = case_images(cfg, batch=2, seed=1)
    ref = run_authors(model, x, samples=2)
    rt = open_engine(checkpoint, threads, channels_last=True, dropout="off")
    from drifa_edge.inference.engine import run_mc_logits

    got = run_mc_logits([rt], x, EngineConfig(samples=2, seed=0))
    return max(float(np.abs(g - r).max()) for g, r in zip(got.values(), ref, strict=True))


def memory_child(method: str, checkpoint: Path, quick: bool, samples: int, threads: int | None) -> dict:
    """Runs in a fresh process: peak RSS growth (MiB) of one warm call for one case."""
    cfg = model_config(quick)
    x = case_images(cfg, batch=1)
    if method == "authors":
        model = authors_model(checkpoint, threads)

        def call():
            return run_authors(model, x, samples)
    else:
        rt = open_engine(checkpoint, threads, channels_last=method == "engine")

        def call():
            return run_mc([rt], x, EngineConfig(samples=samples, seed=0))

    reset_peak_rss()  # the load's own peak (weights read + model built) must not count
    before = rss_mib()
    call()
    peak = peak_rss_mib()
    return {
        "rss_after_load_mib": round(before, 1),
        "peak_rss_mib": round(peak, 1),
        "peak_growth_mib": round(max(0.0, peak - before), 1),
    }


def reset_peak_rss() -> None:
    """Restart VmHWM from the current RSS (Linux >= 4.0); elsewhere the peak includes loading."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mib() -> float:
    """Peak RSS of this process image. /proc's VmHWM, not ru_maxrss: Linux carries
    ru_maxrss over fork + exec, so a child would report its (large) parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mib() -> float:
    """Current resident set size (Linux /proc; psutil elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        import psutil

        return psutil.Process().memory_info().rss / 2**20


def peak_memory(method: str, checkpoint: Path, args) -> dict:
    cmd = [sys.executable, __file__, "--memory-child", method, "--checkpoint", str(checkpoint)]
    cmd += ["--samples", str(args.samples)] + (["--quick"] if args.quick else [])
    cmd += ["--threads", str(args.threads)] if args.threads else []
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=1800)
    return json.loads(out.stdout.strip().splitlines()[-1])


def cpu_summary() -> dict:
    """:func:`drifa_edge.runtimes.cpu.cpu_summary` plus what this script also records."""
    return {**cpu_record(), "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}


def ms(values: list[float], per: int = 1) -> float:
    return round(1000 * statistics.median(values) / per, 2)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=30, help="MC samples T")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per method (one case)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--throughput-repeats", type=int, default=2, help="timed engine calls on 16 cases")
    p.add_argument("--cases", type=int, default=16, help="cases of the throughput measurement")
    p.add_argument("--max-rows", type=int, default=32)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--bf16", action="store_true", help="also time the engine in bf16 (information only)")
    p.add_argument("--quick", action="store_true", help="tiny model (32 px, width 0.125): a smoke test")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument(
        "--memory-child", choices=["authors", "engine", "engine_contiguous"], help=argparse.SUPPRESS
    )
    p.add_argument("--checkpoint", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.memory_child:
        result = memory_child(args.memory_child, args.checkpoint, args.quick, args.samples, args.threads)
        print(json.dumps(result))
        return result

    load_before = os.getloadavg()
    cfg = model_config(args.quick)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = make_checkpoint(cfg, Path(tmp) / "paper")
        if args.threads:
            torch.set_num_threads(args.threads)
        one = case_images(cfg, batch=1)
        many = case_images(cfg, batch=args.cases, seed=2)
        model = authors_model(checkpoint, args.threads)
        rt_cl = open_engine(checkpoint, args.threads, channels_last=True)
        rt_plain = open_engine(checkpoint, args.threads, channels_last=False)
        engine_cfg = EngineConfig(samples=args.samples, seed=0, max_rows=args.max_rows)
        log(
            f"one case, T={args.samples}: {args.warmup} warm-up + {args.repeats} timed rounds, interleaved..."
        )
        ways = {
            "authors": lambda: run_authors(model, one, args.samples),
            "engine": lambda: run_mc([rt_cl], one, engine_cfg),
            "engine_contiguous": lambda: run_mc([rt_plain], one, engine_cfg),
        }
        if args.bf16 and native_bf16():  # for information only: not comparable to fp32 numerically
            rt_bf16 = open_engine(checkpoint, args.threads, channels_last=True, precision="bf16")
            ways["engine_bf16 (info)"] = lambda: run_mc([rt_bf16], one, engine_cfg)
        one_case = interleaved(ways, args.repeats, args.warmup)
        per_case = {name: ms(t) for name, t in one_case.items()}
        best = min(("engine", "engine_contiguous"), key=per_case.get)
        log(f"one case: {per_case}; throughput of {best} on {args.cases} cases...")
        rt_best = rt_cl if best == "engine" else rt_plain
        throughput = interleaved(  # warm already; the faster engine variant only (each call is long)
            {best: lambda: run_mc([rt_best], many, engine_cfg)}, args.throughput_repeats, warmup=0
        )
        log("dropout-off equivalence and peak memory (one child process per method)...")
        max_diff = equivalence(checkpoint, cfg, args.threads)
        memory = {m: peak_memory(m, checkpoint, args) for m in ("authors", "engine", "engine_contiguous")}
    result = {
        "benchmark": "mc_inference",
        "command": " ".join(
            ["python", "benchmarks/mc_inference.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "config": {
            "model": "tiny (32 px, width 0.125)" if args.quick else "paper (2 x RGB 128x128, widths 64..512)",
            "samples": args.samples,
            "max_rows": args.max_rows,
            "threads": torch.get_num_threads(),
            "repeats": args.repeats,
            "warmup": args.warmup,
            "cases_for_throughput": args.cases,
        },
        "ms_per_case": per_case,
        "ms_per_case_all_repeats": {n: [round(1000 * t, 1) for t in ts] for n, ts in one_case.items()},
        "headline_engine": best,
        "speedup_vs_authors": round(per_case["authors"] / per_case[best], 2),
        "speedup_vs_authors_by_variant": {
            n: round(per_case["authors"] / per_case[n], 2) for n in per_case if n != "authors"
        },
        "speedup_vs_authors_of_fastest_calls": round(  # less sensitive to bursts of load from others
            min(one_case["authors"]) / min(one_case[best]), 2
        ),
        "target_ratio": TARGET_RATIO,
        "target_met": per_case["authors"] / per_case[best] >= TARGET_RATIO,
        "throughput_cases_per_s": {
            **{n: round(args.cases / statistics.median(t), 2) for n, t in throughput.items()},
            "authors (1 / time per case)": round(1000 / per_case["authors"], 2),
        },
        "peak_memory": memory,
        "dropout_off_max_abs_logit_diff": max_diff,
        "environment": {
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
            "cpu": cpu_summary(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("ms_per_case", "speedup_vs_authors", "throughput_cases_per_s")}))
    return result


if __name__ == "__main__":
    main()
