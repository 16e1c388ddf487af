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
import platform
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "ray_throughput.json"
TASKS = ("derm", "blood")


def make_model(folder: Path) -> Path:
    import torch

    from drifa_edge.card import default_card
    from drifa_edge.model.config import ModelConfig, TaskSpec
    from drifa_edge.model.drifa import build_model
    from drifa_edge.training.checkpoint import save_checkpoint

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
    flags: set[str] = set()
    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    simd = sorted(f for f in flags if f.startswith(("avx512", "avx2", "amx", "fma")))
    return {
        "model": model,
        "logical_cpus": os.cpu_count(),
        "simd_flags": simd,
        "load_avg_at_start": os.getloadavg(),
    }


def rate(n: int, seconds: float) -> float:
    return round(n / seconds, 2) if seconds > 0 else float("nan")


def bench_local(ckpt, cases, out: Path, options, cfg) -> dict:
    from drifa_edge.inference.predict import predict_cases

    t0 = time.perf_counter()
    predict_cases(ckpt, cases, out, options=options, engine_cfg=cfg, batch_size=8, force=True)
    wall = time.perf_counter() - t0
    return {"wall_s": round(wall, 2), "cases_per_s": rate(len(cases), wall)}


def bench_ray_data(ckpt, cases, folder: Path, options, cfg, actors: int, cpus: float) -> dict:
    """Two jobs, N/4 and N cases: fixed cost per job (intercept) and marginal rate (slope)."""
    from drifa_edge.scaleout.batch import score_cases
    from drifa_edge.scaleout.config import BatchConfig

    batch = BatchConfig(actors=actors, cpus_per_actor=cpus, decode_cpus=0.25, decode_block=8, batch_size=8)
    walls, workers = {}, {}
    for n in (len(cases) // 4, len(cases)):
        t0 = time.perf_counter()
        summary = score_cases(
            ckpt, cases[:n], folder / f"ray{actors}-{n}.jsonl", options=options, engine_cfg=cfg, batch=batch
        )
        walls[n] = time.perf_counter() - t0
        workers = summary.workers
        assert summary.ok == n, summary.errors[:3]
    (small, w_small), (big, w_big) = sorted(walls.items())
    marginal = (w_big - w_small) / (big - small)  # s per extra case once the actors are up
    return {
        "actors": actors,
        "cpus_per_actor": cpus,
        "wall_s": {str(n): round(w, 2) for n, w in walls.items()},
        "cases_per_s": rate(big, w_big),
        "fixed_cost_s": round(w_big - marginal * big, 2),
        "marginal_cases_per_s": rate(1, marginal),
        "workers_of_last_job": workers,
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
        t0 = time.perf_counter()
        records = []
        for i in range(0, len(prepared), 8):
            records += predictor.predict_prepared(prepared[i : i + 8])
        engine = (time.perf_counter() - t0) / len(cases)
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
        "ok": sum(x[0] == 200 for x in results),
        "latency_ms_p50": round(1000 * latencies[len(latencies) // 2], 1),
        "latency_ms_p90": round(1000 * latencies[int(0.9 * (len(latencies) - 1))], 1),
        "mean_batch_cases": round(statistics.mean(x[2] for x in results), 2),
    }


def projection(components: dict, ray_rows: list[dict], local: dict) -> dict:
    """Throughput per node and for N nodes, from this run's measurements; see ``assumptions``."""
    decode, engine = components["decode_ms_per_case"] / 1000, components["engine_ms_per_case_batch8"] / 1000
    one_actor = next(r for r in ray_rows if r["actors"] == 1)
    # Ray's marginal rate with one actor against the engine alone in-process (decode runs beside it)
    efficiency = min(1.0, one_actor["marginal_cases_per_s"] * engine)
    per_core = efficiency / engine  # one actor per core, one runtime thread; decode on spare fractions
    decode_share = decode / (decode + engine)
    per_node = {f"{c}_cores": round(c * per_core / (1 + decode_share), 1) for c in (2, 8, 32)}
    driver = components["driver_records_per_s"]
    nodes = {}
    for n in (1, 4, 16, 64):
        cluster = n * 8 * per_core / (1 + decode_share)
        nodes[f"{n}_nodes_of_8_cores"] = {
            "cases_per_s": round(min(cluster, driver), 1),
            "bound_by": "the driver's record writes"
            if cluster > driver
            else "engine (+ decode) on the nodes",
        }
    local_rate = local["cases_per_s"]
    return {
        "ray_marginal_efficiency_vs_engine_alone": round(efficiency, 2),
        "per_core_cases_per_s": round(per_core, 2),
        "decode_share_of_cpu": round(decode_share, 3),
        "per_node": per_node,
        "cluster": nodes,
        "break_even_cases_vs_local": round(one_actor["fixed_cost_s"] * local_rate, 0),
        "assumptions": [
            "cores are real and idle (this machine was shared with other jobs: read ratios, not absolutes)",
            "per-case cost = engine at batch 8 with 1 runtime thread (demo-size model, T as run) plus decode, "
            "both measured here; throughput scales linearly with cores, one actor per core",
            "Ray's marginal efficiency (1 actor, slope between two job sizes) holds for every actor",
            "decode reads local-disk PNG/NPY; a shared filesystem adds latency that enough decode tasks hide",
            "the driver parses every record and fsyncs once per block of 8 into one JSONL: its rate caps "
            "the cluster (more records per block, or one output file per node, would lift it)",
            "object store traffic ~ 64 KiB per preprocessed case (two 64 px float32 inputs): far below "
            "network and store limits at these rates; with 512 px inputs it is 64x more",
            "fixed cost per job (actors import torch and open the runtime; Ray start not included) is paid "
            "once: below break_even_cases a job is faster with local predict",
        ],
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=96)
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
        connect(
            ClusterConfig(
                num_cpus=os.cpu_count(),
                object_store_mb=256,
                temp_dir=Path(tempfile.mkdtemp(prefix="drifa-rb-", dir="/tmp")),
            )
        )
        result["ray_start_s"] = round(time.perf_counter() - t0, 2)
        rows = [
            bench_ray_data(ckpt, cases, tmp, options, cfg, 1, 1.0),
            bench_ray_data(ckpt, cases, tmp, options, cfg, 2, 0.75),
        ]
        result["ray_data"] = rows
        for row in rows:
            row["ratio_vs_local"] = round(row["cases_per_s"] / result["local_predict"]["cases_per_s"], 2)
            row["marginal_ratio_vs_local"] = round(
                row["marginal_cases_per_s"] / result["local_predict"]["cases_per_s"], 2
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
            result["serve"] = serve_rows
        ray.shutdown()
    result["projection"] = projection(result["components"], rows, result["local_predict"])
    result["cpu"]["load_avg_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
