"""Ray Data scoring and Ray Serve against local predict on the same cases, on this machine.

The demo-size model (64 px, width 0.25, an RGB and a gray task, random weights:
speed does not depend on training), N cases written as 128 px PNG + NPY files,
T = 30, torch runtime, one runtime thread per actor / replica / local process.

Rows (each timed end to end, in this order, once):
- local predict (``predict_cases``, batch 8, 1 thread): the baseline;
- Ray Data with 1 and 2 actors on a local Ray (``num_cpus`` = the machine's), with
  the job's fixed cost (actor start: import torch, open the runtime) split from the
  steady rate (cases after the first record / time after the first record);
- Ray Serve, 1 and 2 replicas, C concurrent HTTP clients posting every case once,
  against the same cases run in-process by ``Predictor.predict_prepared`` in batches of
  8 (what a local service does without HTTP);
- components for the projection: decode ms/case (``prepare_case``), engine ms/case
  (batch 8), driver-side record writes/s (JSON parse + fsync per line).

The projection in the JSON (and README "Scaling out") is arithmetic on these
measurements; its assumptions are written next to it.

    nice -n 10 python benchmarks/ray_throughput.py            # writes benchmarks/results/ray_throughput.json
    python benchmarks/ray_throughput.py --cases 16 --out /tmp/x.json   # smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from drifa_edge.runtimes.cpu import cpu_summary as cpu_record

RESULTS = Path(__file__).resolve().parent / "results" / "ray_throughput.json"
TASKS = ("derm", "blood")


def make_model(folder: Path) -> Path:
    import torch

    from drifa_edge.artifact.card import default_card
    from drifa_edge.artifact.checkpoint import save_checkpoint
    from drifa_edge.model.config import ModelConfig, TaskSpec
    from drifa_edge.model.drifa import build_model

    torch.manual_seed(0)
    tasks = (
        TaskSpec("derm", ("nevus", "melanoma", "other")),
        TaskSpec("blood", ("a", "b", "c", "d"), channels=1),
    )
    cfg = ModelConfig(tasks=tasks, image_size=64, width=0.25)  # drifa_edge.demo.DEMO_RECIPE's size
    save_checkpoint(build_model(cfg).eval(), default_card(cfg), folder)
    return folder


def make_cases(folder: Path, n: int):
    from PIL import Image

    from drifa_edge.inference.manifest import Case

    rng = np.random.default_rng(0)
    cases = []
    for i in range(n):
        derm = folder / f"c{i}_derm.png"
        Image.fromarray(rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)).save(derm)
        blood = folder / f"c{i}_blood.npy"
        np.save(blood, rng.random((128, 128)).astype(np.float32))
        cases.append(Case(f"c{i}", {"derm": derm, "blood": blood}))
    return cases


def cpu_summary() -> dict:
    """:func:`drifa_edge.runtimes.cpu.cpu_summary` plus what this script also records."""
    return {**cpu_record(), "load_avg_at_start": os.getloadavg()}


def rate(n: int, seconds: float) -> float:
    return round(n / seconds, 2) if seconds > 0 else float("nan")


class CpuMeter:
    """CPU seconds (user + system) of this process and all its descendants (Ray's GCS,
    raylet, workers, actors) over a window, polled every 0.2 s so that processes that
    exit before the end (a job's actors) still count up to their last poll.

    On a shared machine wall time says how much CPU the scheduler gave us; CPU seconds
    per case say what the work costs, which is what a dedicated node's throughput follows.
    """

    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        self._start: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._stop = threading.Event()

    def _poll(self, first: bool = False) -> None:
        me = self._psutil.Process()
        for proc in [me, *me.children(recursive=True)]:
            try:
                t = proc.cpu_times()
                cpu = t.user + t.system
            except self._psutil.Error:
                continue
            if first:
                self._start[proc.pid] = cpu
            self._start.setdefault(proc.pid, 0.0)  # born inside the window
            self._last[proc.pid] = cpu

    def __enter__(self) -> CpuMeter:
        self._poll(first=True)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self._poll()

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._poll()

    @property
    def seconds(self) -> float:
        return sum(self._last[p] - self._start[p] for p in self._last)


def bench_local(ckpt, cases, out: Path, options, cfg) -> dict:
    from drifa_edge.inference.predict import predict_cases

    t0 = time.perf_counter()
    with CpuMeter() as meter:
        predict_cases(ckpt, cases, out, options=options, engine_cfg=cfg, batch_size=8, force=True)
    wall = time.perf_counter() - t0
    return {
        "wall_s": round(wall, 2),
        "cases_per_s": rate(len(cases), wall),
        "cpu_s": round(meter.seconds, 2),
        "cpu_ms_per_case": round(1000 * meter.seconds / len(cases), 1),
    }


def bench_ray_data(ckpt, cases, folder: Path, options, cfg, actors: int, cpus: float) -> dict:
    """One job over every case: wall time, time to the first record (the job's fixed cost:
    actors importing torch and opening the runtime, plus the first batch) and the rate
    from the first record to the last (steady state)."""
    from drifa_edge.scaleout.batch import score_cases
    from drifa_edge.scaleout.config import BatchConfig

    batch = BatchConfig(actors=actors, cpus_per_actor=cpus, decode_cpus=0.25, decode_block=8, batch_size=8)
    arrivals: list[float] = []
    t0 = time.perf_counter()
    with CpuMeter() as meter:
        summary = score_cases(
            ckpt, cases, folder / f"ray{actors}.jsonl", options=options, engine_cfg=cfg, batch=batch, force=True,
            on_record=lambda r: arrivals.append(time.perf_counter()),
        )  # fmt: skip
    wall = time.perf_counter() - t0
    assert summary.ok == len(cases), summary.errors[:3]
    first_block = min(batch.batch_size, len(cases))  # records come a block at a time
    return {
        "actors": actors,
        "cpus_per_actor": cpus,
        "cases": len(cases),
        "wall_s": round(wall, 2),
        "cases_per_s": rate(len(cases), wall),
        "first_record_s": round(arrivals[0] - t0, 2),
        "steady_cases_per_s": rate(len(cases) - first_block, arrivals[-1] - arrivals[0]),
        "cpu_s": round(meter.seconds, 2),  # whole Ray (GCS, raylet, decode tasks, actors) + this driver
        "cpu_ms_per_case": round(1000 * meter.seconds / len(cases), 1),
        "workers": summary.workers,
    }


def bench_components(ckpt, cases, options, cfg) -> dict:
    from drifa_edge.inference.writers import JsonlWriter
    from drifa_edge.scaleout.adapter import Predictor, model_card, prepare_case
    from drifa_edge.scaleout.batch import BlockAppender

    card = model_card(ckpt)
    t0 = time.perf_counter()
    prepared = [prepare_case(c, card) for c in cases]
    decode = (time.perf_counter() - t0) / len(cases)
    predictor = Predictor.open(ckpt, options=options, engine_cfg=cfg)
    try:
        predictor.predict_prepared(prepared[:8])  # warm-up
        t0, c0 = time.perf_counter(), time.process_time()
        records = []
        for i in range(0, len(prepared), 8):
            records += predictor.predict_prepared(prepared[i : i + 8])
        engine = (time.perf_counter() - t0) / len(cases)
        engine_cpu = (time.process_time() - c0) / len(cases)
    finally:
        predictor.close()
    lines = [json.dumps(r) for r in records] * max(1, 512 // len(records))
    with tempfile.TemporaryDirectory() as tmp:
        with JsonlWriter(Path(tmp) / "w.jsonl") as writer:  # local predict: fsync per record
            t0 = time.perf_counter()
            for line in lines[:128]:
                writer.write(json.loads(line))
            write_each = 128 / (time.perf_counter() - t0)
        with BlockAppender(Path(tmp) / "b.jsonl") as appender:  # the Ray driver: fsync per block of 8
            t0 = time.perf_counter()
            for i in range(0, len(lines), 8):
                appender.write_block([json.loads(x) for x in lines[i : i + 8]])
            write = len(lines) / (time.perf_counter() - t0)
    return {
        "decode_ms_per_case": round(1000 * decode, 2),
        "engine_ms_per_case_batch8": round(1000 * engine, 2),
        "engine_cpu_ms_per_case_batch8": round(1000 * engine_cpu, 2),
        "in_process_cases_per_s": rate(1, decode + engine),
        "driver_records_per_s": round(write, 1),
        "records_per_s_fsync_each": round(write_each, 1),
        "record_bytes": round(statistics.mean(len(x) for x in lines)),
    }


def bench_serve(ckpt, cases, options, cfg, replicas: int, clients: int, cpus: float) -> dict:
    import socket
    import urllib.request
    import uuid

    from ray import serve

    from drifa_edge.scaleout.config import ServeConfig
    from drifa_edge.scaleout.serve import deploy

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t_deploy = time.perf_counter()
    deploy(
        ckpt,
        options=options,
        engine_cfg=cfg,
        cfg=ServeConfig(replicas=replicas, cpus_per_replica=cpus, port=port),
    )
    deploy_s = time.perf_counter() - t_deploy

    def post(case) -> tuple[int, float, int]:
        boundary = uuid.uuid4().hex
        body = f'--{boundary}\r\nContent-Disposition: form-data; name="case_id"\r\n\r\n{case.case_id}\r\n'.encode()
        for task, path in case.inputs.items():
            body += (
                (
                    f'--{boundary}\r\nContent-Disposition: form-data; name="{task}"; filename="{path.name}"\r\n\r\n'
                ).encode()
                + path.read_bytes()
                + b"\r\n"
            )
        body += f"--{boundary}--\r\n".encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/cases", data=body, method="POST",
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )  # fmt: skip
        t = time.perf_counter()
        with urllib.request.urlopen(request, timeout=300) as r:
            record = json.loads(r.read())
            return r.status, time.perf_counter() - t, record["worker"]["batch_cases"]

    post(cases[0])  # warm-up
    results: list[tuple[int, float, int]] = []
    todo = list(cases)
    lock = threading.Lock()

    def client() -> None:
        while True:
            with lock:
                if not todo:
                    return
                case = todo.pop()
            results.append(post(case))

    t0 = time.perf_counter()
    with CpuMeter() as meter:
        threads = [threading.Thread(target=client) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    wall = time.perf_counter() - t0
    serve.shutdown()
    latencies = sorted(x[1] for x in results)
    return {
        "replicas": replicas,
        "cpus_per_replica": cpus,
        "clients": clients,
        "deploy_s": round(deploy_s, 2),
        "wall_s": round(wall, 2),
        "cases_per_s": rate(len(results), wall),
        "cpu_ms_per_case": round(
            1000 * meter.seconds / len(results), 1
        ),  # replicas, proxy, controller, clients
        "ok": sum(x[0] == 200 for x in results),
        "latency_ms_p50": round(1000 * latencies[len(latencies) // 2], 1),
        "latency_ms_p90": round(1000 * latencies[int(0.9 * (len(latencies) - 1))], 1),
        "mean_batch_cases": round(statistics.mean(x[2] for x in results), 2),
    }


def projection(components: dict, warmup: dict, ray_rows: list[dict], local: dict) -> dict:
    """Throughput per node and for N nodes from this run's CPU-time measurements; see ``assumptions``."""
    engine_cpu = components["engine_cpu_ms_per_case_batch8"] / 1000
    one_actor = next(r for r in ray_rows if r["actors"] == 1)
    # the job's fixed CPU (actor start: import torch, open the runtime; Ray Data set-up) from the
    # warm-up job of a few cases, less their engine work; the rest of a job's CPU is per case
    fixed_cpu = max(0.0, warmup["cpu_s"] - warmup["cases"] * engine_cpu)
    per_case_cpu = max(engine_cpu, (one_actor["cpu_s"] - fixed_cpu) / one_actor["cases"])
    local_cpu = local["cpu_ms_per_case"] / 1000
    per_core = 1 / per_case_cpu
    per_node = {f"{c}_cores": round(c * per_core, 1) for c in (2, 8, 32)}
    driver = components["driver_records_per_s"]
    nodes = {}
    for n in (1, 4, 16, 64, 256):
        cluster = n * 8 * per_core
        nodes[f"{n}_nodes_of_8_cores"] = {
            "cases_per_s": round(min(cluster, driver), 1),
            "bound_by": "the driver's record writes" if cluster > driver else "engine CPU on the nodes",
        }
    local_rate = 1 / local_cpu  # one core, local predict
    wall_fixed = one_actor["first_record_s"]
    return {
        "engine_cpu_ms_per_case": round(1000 * engine_cpu, 1),
        "local_predict_cpu_ms_per_case": round(1000 * local_cpu, 1),
        "ray_job_fixed_cpu_s": round(fixed_cpu, 1),
        "ray_cpu_ms_per_case": round(1000 * per_case_cpu, 1),
        "ray_cpu_overhead_per_case_vs_local": round(per_case_cpu / local_cpu, 2),
        "per_core_cases_per_s": round(per_core, 2),
        "per_node": per_node,
        "cluster": nodes,
        "break_even_cases_8_cores_vs_local_1_core": round(wall_fixed * local_rate * 8 / 7, 0),
        "assumptions": [
            "dedicated, idle cores; CPU seconds (not wall time) are the measure here because this 2-core "
            "machine was shared with other jobs (load average in 'cpu'): wall-time ratios measured the "
            "scheduler as much as the code",
            "a case costs the same CPU on any core: per-case CPU = Ray's (driver, GCS, raylet, decode, actor) "
            "less the job's fixed CPU, with the demo-size model, T as run, batch 8, 1 runtime thread",
            "one actor per core, one runtime thread each; decode tasks fit in a fraction of a core",
            "decode reads local-disk PNG/NPY; a shared filesystem adds latency that enough decode tasks hide",
            "the driver parses every record and fsyncs once per block of 8 into one JSONL: its rate caps the "
            "cluster (bigger blocks, or one output per node merged at the end, would lift it)",
            "object store traffic ~ 64 KiB per preprocessed case (two 64 px float32 inputs): far below "
            "network and store limits at these rates; at 512 px it is 64x more and the store, not the "
            "engine, may bound a many-node job",
            "fixed cost per job (actors import torch and open the runtime) is paid once per job and per "
            "actor start; break-even: cases from which 8 Ray actors beat local predict on one core",
        ],
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=192)
    p.add_argument("--samples", type=int, default=30)
    p.add_argument("--clients", type=int, default=8, help="concurrent HTTP clients for Serve")
    p.add_argument("--no-serve", action="store_true")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)

    import ray

    from drifa_edge.inference.engine import EngineConfig
    from drifa_edge.runtimes.base import RuntimeOptions
    from drifa_edge.scaleout.cluster import connect
    from drifa_edge.scaleout.config import ClusterConfig

    options = RuntimeOptions(threads=1)
    cfg = EngineConfig(samples=args.samples, seed=0)
    result: dict = {
        "benchmark": "ray_throughput",
        "command": "nice -n 10 python benchmarks/ray_throughput.py " + " ".join(argv or []),
        "cpu": cpu_summary(),
        "ray_version": ray.__version__,
        "model": "demo size: 64 px, width 0.25, 2 tasks (RGB 3 classes, gray 4 classes), random weights",
        "cases": args.cases,
        "samples": args.samples,
        "threads_per_process": 1,
    }
    with tempfile.TemporaryDirectory(prefix="drifa-bench-") as tmp:
        tmp = Path(tmp)
        ckpt = make_model(tmp / "model")
        cases = make_cases(tmp, args.cases)
        print("[1/4] components", flush=True)
        result["components"] = bench_components(ckpt, cases, options, cfg)
        print("[2/4] local predict", flush=True)
        result["local_predict"] = bench_local(ckpt, cases, tmp / "local.jsonl", options, cfg)
        print("[3/4] Ray Data", flush=True)
        t0 = time.perf_counter()
        ray_dir = Path(tempfile.mkdtemp(prefix="drifa-rb-", dir="/tmp"))  # short: Ray's socket paths
        connect(ClusterConfig(num_cpus=os.cpu_count(), object_store_mb=256, temp_dir=ray_dir))
        result["ray_start_s"] = round(time.perf_counter() - t0, 2)
        bench_ray_data(ckpt, cases[:8], tmp, options, cfg, 1, 1.0)  # Ray Data's one-time set-up
        warmup = bench_ray_data(ckpt, cases[:8], tmp, options, cfg, 1, 1.0)  # a job's fixed cost
        result["ray_data_warmup_8_cases"] = warmup
        rows = [
            bench_ray_data(ckpt, cases, tmp, options, cfg, 1, 1.0),
            bench_ray_data(ckpt, cases, tmp, options, cfg, 2, 0.75),
        ]
        result["ray_data"] = rows
        result["local_predict_after"] = bench_local(
            ckpt, cases, tmp / "local.jsonl", options, cfg
        )  # load drifts
        result["local_predict"]["cases_per_s_mean_of_before_after"] = local_rate = round(
            statistics.mean(
                [result["local_predict"]["cases_per_s"], result["local_predict_after"]["cases_per_s"]]
            ),
            2,
        )
        for row in rows:
            row["ratio_vs_local"] = round(row["cases_per_s"] / local_rate, 2)
            row["steady_ratio_vs_local"] = round(row["steady_cases_per_s"] / local_rate, 2)
            row["cpu_per_case_ratio_vs_local"] = round(
                row["cpu_ms_per_case"] / result["local_predict"]["cpu_ms_per_case"], 2
            )
        if not args.no_serve:
            print("[4/4] Ray Serve", flush=True)
            serve_rows = [
                bench_serve(ckpt, cases, options, cfg, 1, args.clients, 1.0),
                bench_serve(ckpt, cases, options, cfg, 2, args.clients, 0.75),
            ]
            result["components_after"] = bench_components(ckpt, cases, options, cfg)  # load may have changed
            base = statistics.mean(
                [
                    result["components"]["in_process_cases_per_s"],
                    result["components_after"]["in_process_cases_per_s"],
                ]
            )
            for row in serve_rows:
                row["ratio_vs_in_process"] = round(row["cases_per_s"] / base, 2)
                row["cpu_per_case_ratio_vs_local_predict"] = round(
                    row["cpu_ms_per_case"] / result["local_predict"]["cpu_ms_per_case"], 2
                )
            result["serve"] = serve_rows
        ray.shutdown()
        shutil.rmtree(ray_dir, ignore_errors=True)
    result["projection"] = projection(result["components"], warmup, rows, result["local_predict"])
    result["cpu"]["load_avg_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
