"""Adaptive T against fixed T, one case per call, on a real-data model (issue 19, item 1).

For each of the first N test cases of --data: one fixed-T engine call and one adaptive-T
call, alternating case by case so that load from other processes hits both alike
(``drifa_edge.bench.worker.time_adaptive``, what ``drifa-edge bench --adaptive`` runs).
Written: per-case latency percentiles (p50/p95/p99) of both, suffix rows per case, the
per-case speed-up, the share of cases whose two runs (independent draws) gave the same
class and referral per task, and the CPU flags. The gate verdict is a separate run of
``drifa-edge check --adaptive`` (the README gives both commands).

    nice -n 10 python benchmarks/adaptive_t.py --artifact /work/runs/real-small-v2-export \\
        --runtime openvino --data skin_isic9=... --data blood_pbc8=... --cases 60 --threads 1
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path

import numpy as np

from drifa_edge.bench.rows import RowSpec
from drifa_edge.bench.worker import time_adaptive
from drifa_edge.drift.check import load_split
from drifa_edge.inference.adaptive import AdaptiveConfig
from drifa_edge.runtimes.base import RuntimeOptions, open_runtime
from drifa_edge.runtimes.cpu import cpu_flags

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "adaptive_t.json"


def time_batch(runtime, images, samples: int, adaptive: AdaptiveConfig, repeats: int) -> dict:
    """All cases as one engine batch (how check, score and a backlog run), fixed and adaptive
    alternating ``repeats`` times: seconds per case and suffix rows per case of each."""
    import time

    from drifa_edge.inference.adaptive import run_adaptive
    from drifa_edge.inference.engine import EngineConfig, run_mc
    from drifa_edge.metrics.sequential import Referral

    cfg = EngineConfig(samples=samples)
    referral = {t: Referral(r.metric, r.threshold) for t, r in runtime.card.referral.items()}
    n = images[0].shape[0]
    fixed, adapt, rows = [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run_mc([runtime], images, cfg)
        fixed.append((time.perf_counter() - t0) / n)
        t0 = time.perf_counter()
        run = run_adaptive([runtime], images, cfg, adaptive, referral)
        adapt.append((time.perf_counter() - t0) / n)
        rows.append(float(run.rows.mean()))
    return {
        "cases": n,
        "repeats": repeats,
        "fixed_s_per_case": fixed,
        "adaptive_s_per_case": adapt,
        "adaptive_rows_per_case": rows,
        "speedup_of_medians": float(np.median(fixed) / np.median(adapt)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--artifact", required=True, help="export (or checkpoint) folder")
    parser.add_argument("--runtime", default="openvino")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--data", action="append", required=True, help="NAME=PATH, once per task")
    parser.add_argument("--cases", type=int, default=60)
    parser.add_argument("--samples", type=int, default=30, help="T_max and the fixed T")
    parser.add_argument("--min-samples", type=int, default=4)
    parser.add_argument("--block", type=int, default=3)
    parser.add_argument("--error-rate", type=float, default=0.05)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3, help="alternating batch runs of each")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    adaptive = AdaptiveConfig(min_samples=args.min_samples, block=args.block, error_rate=args.error_rate)
    runtime = open_runtime(
        args.runtime, args.artifact, RuntimeOptions(precision=args.precision, threads=args.threads)
    )
    images, _, _ = load_split(args.data, runtime.card, "test", args.cases)
    with tempfile.TemporaryDirectory() as tmp:
        eval_path = Path(tmp) / "cases.npz"
        np.savez(eval_path, **{f"x{k}": x for k, x in enumerate(images)})
        spec = RowSpec(
            row_id=f"{args.runtime}-{args.precision}",
            runtime=args.runtime,
            precision=args.precision,
            path=str(args.artifact),
            samples=(args.samples,),
            warmup=2,
            threads=args.threads,
            eval_path=str(eval_path),
            adaptive=adaptive.to_dict(),
            adaptive_cases=args.cases,
        )
        result = time_adaptive(runtime, spec, runtime.card)
    result["batch"] = time_batch(runtime, images, args.samples, adaptive, args.repeats)
    runtime.close()
    flags = sorted(cpu_flags())
    record = {
        "command": "python benchmarks/adaptive_t.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("out", "data"))
        + "".join(f" --data {d}" for d in args.data),
        "artifact": str(args.artifact),
        "runtime": args.runtime,
        "precision": args.precision,
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "cpu_flags": [f for f in flags if f.startswith(("avx", "amx", "sse4", "fma"))],
        },
        **result,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps({k: v for k, v in record.items() if k != "per_case"}, indent=1))


if __name__ == "__main__":
    main()
