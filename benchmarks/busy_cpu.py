"""Latency under a busy CPU: p50 / p95 per case with and without one co-running process that
burns a core, for each runtime, with this branch's thread and wait policy ("after") and, for
comparison, with another checkout's code ("before", e.g. /work/main without it).

One worker subprocess per (row, code): it opens the runtime with no ``threads`` (each code's
default), warms up, then alternates quiet and loaded blocks of timed calls (quiet first in even
rounds, loaded first in odd ones), starting and killing the burner itself, so quiet and loaded
calls share one process, one run and the same drift of the machine. A call is one case, T MC
samples (the batched engine, prefix once). Ratios, not absolute times, are the result.

    python benchmarks/busy_cpu.py --checkpoint CKPT --export EXP --before-repo /work/main \
        --out benchmarks/results/busy_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

ROWS = {  # row -> (runtime, precision, which folder)
    "torch-fp32": ("torch", "fp32", "checkpoint"),
    "onnxruntime-fp32": ("onnxruntime", "fp32", "export"),
    "openvino-fp32": ("openvino", "fp32", "export"),
    "openvino-int8": ("openvino", "int8", "export"),
}
BURNER = "while True:\n    pass\n"


def _die_with_parent() -> None:
    """In a child (worker, burner): SIGKILL when its parent dies, even killed: no orphan burner."""
    import ctypes
    import signal

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def start_burner() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", BURNER], preexec_fn=_die_with_parent)


def worker(args: argparse.Namespace) -> None:
    """Runs inside the code under test (its PYTHONPATH); prints one JSON line."""
    import numpy as np

    from drifa_edge.inference.engine import EngineConfig, run_mc
    from drifa_edge.runtimes.base import RuntimeOptions, open_runtime

    burner = start_burner() if args.busy_open else None
    if burner is not None:
        time.sleep(1.0)  # the load the default thread count sees when the runtime opens
    t0 = time.perf_counter()
    streams = None if args.streams in (None, "default") else int(args.streams)
    rt = open_runtime(args.runtime, args.path, RuntimeOptions(precision=args.precision, streams=streams))
    open_s = time.perf_counter() - t0
    if burner is not None:
        burner.kill()
        burner.wait()
    rng = np.random.default_rng(0)
    size = rt.card.model.image_size
    images = [rng.standard_normal((1, t.channels, size, size), dtype=np.float32) for t in rt.card.model.tasks]
    cfg = EngineConfig(samples=args.samples, seed=0)

    def call() -> float:
        t = time.perf_counter()
        run_mc([rt], images, cfg)
        return time.perf_counter() - t

    for _ in range(args.warmup):
        call()
    times: dict[str, list[float]] = {"quiet": [], "loaded": []}
    for r in range(args.rounds):
        for phase in ("quiet", "loaded") if r % 2 == 0 else ("loaded", "quiet"):
            burner = None
            if phase == "loaded":
                burner = start_burner()
                time.sleep(0.5)  # let the scheduler settle
            try:
                times[phase] += [call() for _ in range(args.calls)]
            finally:
                if burner is not None:
                    burner.kill()
                    burner.wait()
    torch = sys.modules.get("torch")  # the torch row's threads (never imported by the others)
    info = {
        "open_s": open_s,
        "threads": torch.get_num_threads() if torch is not None else None,
        "streams": getattr(rt, "streams", None),
        "times_s": times,
    }
    try:  # this branch: the thread count its default chose when the runtime opened (cached)
        from drifa_edge.runtimes.threads import default_threads

        info["default_threads"] = default_threads()
    except ImportError:
        info["default_threads"] = None
    print("RESULT " + json.dumps(info))


def _summary(times: list[float]) -> dict[str, float]:
    import numpy as np

    ms = np.asarray(times) * 1000
    return {"p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95)), "n": len(ms)}


def run_row(
    row: str,
    code: str,
    repo: Path,
    args: argparse.Namespace,
    busy_open: bool = False,
    streams: str = "default",
) -> dict:
    runtime, precision, folder = ROWS[row]
    path = args.checkpoint if folder == "checkpoint" else args.export
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        "--runtime",
        runtime,
        "--precision",
        precision,
        "--path",
        str(path),
        "--samples",
        str(args.samples),
        "--rounds",
        str(args.rounds),
        "--calls",
        str(args.calls),
        "--warmup",
        str(args.warmup),
        "--streams",
        streams,
    ]
    cmd += ["--busy-open"] if busy_open else []  # fmt: skip
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OMP_WAIT_POLICY", "KMP_BLOCKTIME", "OMP_NUM_THREADS")
    }
    env["PYTHONPATH"] = str(repo)
    t0 = time.perf_counter()
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        env=env,
        timeout=args.timeout,
        cwd=repo,
        preexec_fn=_die_with_parent,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if not lines:
        return {"row": row, "code": code, "status": "failed", "stderr": proc.stderr[-1500:]}
    info = json.loads(lines[-1][len("RESULT ") :])
    quiet, loaded = _summary(info["times_s"]["quiet"]), _summary(info["times_s"]["loaded"])
    return {
        "row": row,
        "code": code,
        "streams_requested": streams,
        "repo": str(repo),
        "commit": subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip(),  # fmt: skip
        "status": "ok",
        "quiet_ms": quiet,
        "loaded_ms": loaded,
        "loaded_p95_over_quiet_p50": loaded["p95"] / quiet["p50"],
        "loaded_p50_over_quiet_p50": loaded["p50"] / quiet["p50"],
        "open_s": info["open_s"],
        "torch_threads": info["threads"],
        "default_threads": info["default_threads"],
        "openvino_streams": info["streams"],
        "wall_s": time.perf_counter() - t0,
        "times_s": info["times_s"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--runtime"), p.add_argument("--precision"), p.add_argument("--path")
    p.add_argument("--checkpoint", type=Path)
    p.add_argument("--export", type=Path)
    p.add_argument("--before-repo", type=Path, help="a checkout without this branch's policies")
    p.add_argument("--rows", default=",".join(ROWS))
    p.add_argument("--busy-open", action="store_true", help=argparse.SUPPRESS)  # worker: open under load
    p.add_argument(
        "--busy-open-rows", default="", help="rows also run opened under load (this branch's code)"
    )
    p.add_argument(
        "--streams",
        default="default",
        help="OpenVINO rows: comma-separated streams to compare in one run, e.g. default,1,2 "
        "(worker: the one value)",
    )
    p.add_argument("--samples", type=int, default=30)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--calls", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    if args.worker:  # the code under test comes from PYTHONPATH
        worker(args)
        return
    sys.path.insert(0, str(REPO))
    from drifa_edge.bench.runner import machine_info

    codes = [("after", REPO, False)] + ([("before", args.before_repo, False)] if args.before_repo else [])
    machine = machine_info()
    results = []
    busy_rows = [r for r in args.busy_open_rows.split(",") if r]
    streams_list = [s for s in args.streams.split(",") if s]
    for row in args.rows.split(","):
        variants = codes + ([("after-opened-busy", REPO, True)] if row in busy_rows else [])
        for (code, repo, busy), streams in (
            (v, s) for v in variants for s in (streams_list if ROWS[row][0] == "openvino" else ["default"])
        ):
            r = run_row(row, code, repo, args, busy, streams)
            results.append(r)
            if r["status"] == "ok":
                print(f"{row:18s} {code:17s} streams requested {streams:8s} threads {r['torch_threads']} streams {r['openvino_streams']} quiet p50 {r['quiet_ms']['p50']:8.1f}  loaded p50 "
                      f"{r['loaded_ms']['p50']:8.1f} p95 {r['loaded_ms']['p95']:8.1f}  "
                      f"p95/quiet p50 {r['loaded_p95_over_quiet_p50']:.2f}", flush=True)  # fmt: skip
            else:
                print(f"{row} {code}: failed {r['stderr'][-300:]}", flush=True)
    machine["loadavg_end"] = list(os.getloadavg())
    out = {
        "benchmark": "busy_cpu",
        "command": "python " + " ".join(sys.argv),
        "machine": machine,
        "settings": {
            "samples": args.samples,
            "rounds": args.rounds,
            "calls_per_block": args.calls,
            "warmup": args.warmup,
            "burner": "one python process: while True: pass",
        },  # fmt: skip
        "results": results,
    }
    if args.out:
        args.out.write_text(json.dumps(out, indent=2))
        print(f"written {args.out}")


if __name__ == "__main__":
    main()
