"""Where the service's CPU goes per case: the service in this process (no destinations), N
two-task studies sent one after the other, CPU time of each step's thread summed and divided
by N: ingest (check + hash + atomic write + store commit + audit, both instances),
inference (the worker's predict call; torch with 1 thread runs in that thread), SR writing
(highdicom build + atomic write). ``process_cpu_s_per_case`` is all threads of the process.

    nice -n 10 python benchmarks/serve_cpu_breakdown.py   # -> benchmarks/results/serve_cpu_breakdown.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "serve"))
sys.path.insert(0, str(REPO / "benchmarks"))

from serve_helpers import make_study, send, serve_config, start_service, wait_for  # noqa: E402
from serve_load import demo_size_checkpoint  # noqa: E402

from drifa_edge.bench.runner import machine_info  # noqa: E402
from drifa_edge.serve import ingest, results_wiring  # noqa: E402


def timed(owner, name: str, totals: dict, key: str) -> None:
    """Wrap ``owner.name`` to add the calling thread's CPU time to ``totals[key]``."""
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        t = time.thread_time()
        try:
            return original(*args, **kwargs)
        finally:
            totals[key] = totals.get(key, 0.0) + time.thread_time() - t

    setattr(owner, name, wrapper)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--studies", type=int, default=40)
    p.add_argument("--samples", type=int, default=10)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "serve_cpu_breakdown.json")
    args = p.parse_args(argv)
    machine = machine_info()
    tmp = Path(tempfile.mkdtemp(prefix="drifa-serve-cpu-"))
    totals: dict[str, float] = {}
    timed(ingest.Ingestor, "ingest", totals, "ingest")
    timed(results_wiring.ResultsPipeline, "write_and_enqueue", totals, "sr")
    config = serve_config(tmp / "root", inference={"samples": args.samples, "batch_wait_ms": 200.0},
                          assembly={"quiet_seconds": 1.0})  # fmt: skip
    svc = start_service(demo_size_checkpoint(tmp / "model"), config)
    try:
        timed(svc.predictor, "predict", totals, "inference")
        studies = [make_study(i) for i in range(args.studies)]
        cpu0, t0 = time.process_time(), time.time()
        for study in studies:
            send(study, svc.dicom_port)
        wait_for(lambda: svc.store.counts()["DONE"] == args.studies, 600)
        wait_for(lambda: svc.outbox.pending() == 0, 120)
        time.sleep(0.5)  # the last SR's audit line
        cpu, wall = time.process_time() - cpu0, time.time() - t0
    finally:
        svc.stop()
    n = args.studies
    result = {
        "benchmark": "serve_cpu_breakdown",
        "command": "python benchmarks/serve_cpu_breakdown.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine,
        "settings": {
            "studies": n,
            "samples": args.samples,
            "runtime": "torch",
            "threads": 1,
            "model": "demo-size (64 px, width 0.25), untrained",
            "destinations": 0,
        },  # fmt: skip
        "cpu_s_per_case": {k: round(v / n, 4) for k, v in sorted(totals.items())},
        "process_cpu_s_per_case": round(cpu / n, 4),
        "wall_s": round(wall, 2),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["cpu_s_per_case"] | {"process": result["process_cpu_s_per_case"]}))
    return result


if __name__ == "__main__":
    main()
