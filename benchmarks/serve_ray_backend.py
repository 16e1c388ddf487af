"""`drifa-edge serve` with the model in-process (`backend = "local"`) against inference on Ray
Serve (`backend = "ray"`), same DICOM front, same studies, on this machine.

One service at a time runs in this process (threads: receiver, assembly, worker), fed N
two-task studies over DICOM C-STORE by 4 concurrent pynetdicom senders on loopback. The model
is the demo-size one of ``ray_throughput.py`` (64 px, width 0.25, random weights), T = 30,
torch, one runtime thread; micro-batches of up to 4 cases (``[inference] batch_size``).
Rows, each timed from the first C-STORE to the last case DONE (result stored):

- local: the model in the service process;
- ray, 1 replica (1 CPU) and 2 replicas (0.75 CPU each) on a local Ray (num_cpus 2) started
  once before the rows (its start time reported apart), the service deploying the app;
- local again, last: how much the machine's load moved during the run.

Besides wall time (noisy on a shared machine), CPU seconds of this process and every child
(Ray's GCS, raylet, Serve controller, replicas) per case, which is what a dedicated node
follows (see ``ray_throughput.py``'s ``CpuMeter``).

    nice -n 10 python benchmarks/serve_ray_backend.py            # -> benchmarks/results/serve_ray_backend.json
    python benchmarks/serve_ray_backend.py --studies 8 --out /tmp/x.json   # smoke test
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "tests" / "serve"))

from ray_throughput import CpuMeter, cpu_summary, make_model, rate  # noqa: E402
from serve_helpers import make_study, send, serve_config, start_service  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "serve_ray_backend.json"
SENDERS = 4


def run_row(name: str, ckpt: Path, root: Path, studies: list, samples: int, inference: dict) -> dict:
    config = serve_config(
        root, inference={"samples": samples, "seed": 0, "threads": 1, "batch_size": 4, "batch_wait_ms": 50.0, **inference}
    )  # fmt: skip
    t_start = time.perf_counter()
    svc = start_service(ckpt, config)
    start_s = time.perf_counter() - t_start
    statuses: list[int | None] = []
    lock = threading.Lock()
    try:

        def sender(k: int) -> None:
            for study in studies[k::SENDERS]:
                got = send(study, svc.dicom_port, timeout=60)
                with lock:
                    statuses.extend(got)

        t0 = time.perf_counter()
        with CpuMeter() as meter:
            threads = [threading.Thread(target=sender, args=(k,)) for k in range(SENDERS)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            while svc.store.counts()["DONE"] + svc.store.counts()["FAILED"] < len(studies):
                time.sleep(0.05)
        wall = time.perf_counter() - t0
        counts = svc.store.counts()
        records = [svc.store.result(c.case_id) for c in svc.store.cases()]
        batches = [r["timing"]["batch_size"] for r in records if r]  # the service's micro-batches
        calls = [
            r["worker"]["batch_cases"] for r in records if r and r.get("worker")
        ]  # a replica's engine call
        pids = {(r.get("worker") or {}).get("pid") for r in records if r}
    finally:
        svc.stop()
    return {
        "row": name,
        "inference": inference,
        "start_s": round(start_s, 2),  # model load + warm-up (+ deployment for ray)
        "wall_s": round(wall, 2),
        "cases_per_s": rate(len(studies), wall),
        "cpu_s": round(meter.seconds, 2),
        "cpu_ms_per_case": round(1e3 * meter.seconds / len(studies), 1),
        "done": counts["DONE"],
        "failed": counts["FAILED"],
        "acknowledged": sum(1 for s in statuses if s == 0),
        "instances_sent": len(statuses),
        "mean_cases_per_micro_batch": round(statistics.mean(batches), 2) if batches else None,
        "mean_cases_per_replica_call": round(statistics.mean(calls), 2) if calls else None,
        "inference_processes": len(pids - {None}) or 1,
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--studies", type=int, default=48)
    p.add_argument("--samples", type=int, default=30)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)

    import ray

    work = Path(tempfile.mkdtemp(prefix="drifa-srb-", dir="/tmp"))
    try:
        ckpt = make_model(work / "model")
        studies = [make_study(i) for i in range(args.studies)]
        rows = [run_row("local", ckpt, work / "local", studies, args.samples, {})]
        t0 = time.perf_counter()
        ray.init(num_cpus=2, object_store_memory=128 * 2**20, _temp_dir=str(work / "ray"),
                 include_dashboard=False, logging_level="WARNING")  # fmt: skip
        ray_start_s = time.perf_counter() - t0
        try:
            for name, replicas, cpus in (("ray, 1 replica", 1, 1.0), ("ray, 2 replicas", 2, 0.75)):
                ray_cfg = {
                    "deployment": {"replicas": replicas, "cpus_per_replica": cpus, "max_batch_size": 4}
                }
                rows.append(run_row(name, ckpt, work / name.replace(" ", "").replace(",", "-"),
                                    studies, args.samples, {"backend": "ray", "ray": ray_cfg}))  # fmt: skip
        finally:
            from ray import serve

            serve.shutdown()
            ray.shutdown()
        rows.append(run_row("local (again)", ckpt, work / "local2", studies, args.samples, {}))
        local = rows[0]
        for row in rows:
            row["cpu_vs_local"] = round(row["cpu_ms_per_case"] / local["cpu_ms_per_case"], 2)
            row["wall_vs_local"] = round(row["wall_s"] / local["wall_s"], 2)
        result = {
            "benchmark": "serve_ray_backend",
            "command": "nice -n 10 python benchmarks/serve_ray_backend.py " + " ".join(argv or sys.argv[1:]),
            "cpu": cpu_summary(),
            "ray_version": ray.__version__,
            "model": "demo size: 64 px, width 0.25, derm RGB 3 classes + blood gray 4 classes, random weights",
            "studies": args.studies,
            "senders": SENDERS,
            "samples": args.samples,
            "ray_start_s": round(ray_start_s, 2),
            "rows": rows,
            "notes": "wall time from the first C-STORE to the last case DONE (result stored); cpu over this "
            "process and all its children; start_s (model load + warm-up, + deployment for ray) is not in wall_s",
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["rows"], indent=1))
    return result


if __name__ == "__main__":
    main()
