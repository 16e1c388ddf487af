"""Exported runtimes against the authors' way, in one run: T = 30 MC samples of one case.

Paper configuration (two RGB 128x128 inputs, widths 64..512, random weights; the
speed does not depend on the weights), all FP32, the same thread count everywhere:

- ``authors``: T sequential eager PyTorch full passes at batch 1 (the notebook's loop);
- ``torch-engine``: ``run_mc`` on the torch runtime: prefix once, one suffix call of T rows;
- ``onnxruntime-engine`` / ``openvino-engine``: the same engine over the exported
  prefix + MC suffix graphs (in-graph RandomUniformLike masks);
- ``onnxruntime-full`` / ``openvino-full``: a plain export (one graph, images -> logits,
  masks in-graph) run once on the case's images tiled T times: every sample pays the
  deterministic prefix again.

Timings are interleaved (one call of every row per round, rows in a fixed order) so that
load from other processes hits every row alike; after warm-up the median over
``--repeats`` rounds gives ms per case, and the ratios are taken within this one run.

    python benchmarks/export_runtimes.py                  # writes benchmarks/results/export_runtimes.json
    python benchmarks/export_runtimes.py --quick --out /tmp/x.json   # tiny model, smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from drifa_edge.artifact.card import default_card, package_versions
from drifa_edge.artifact.checkpoint import load_checkpoint, save_checkpoint
from drifa_edge.export.onnx import export_full_graph, export_onnx
from drifa_edge.export.openvino import export_openvino
from drifa_edge.inference.engine import EngineConfig, run_mc
from drifa_edge.model.config import ModelConfig, paper_config
from drifa_edge.model.drifa import build_model
from drifa_edge.model.dropout import set_dropout_mode
from drifa_edge.runtimes.base import RuntimeOptions, open_runtime

RESULTS = Path(__file__).resolve().parent / "results" / "export_runtimes.json"


def model_config(quick: bool) -> ModelConfig:
    if quick:
        return ModelConfig(tasks=paper_config().tasks, image_size=32, width=0.125)
    return paper_config()


def case_images(cfg: ModelConfig, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    s = cfg.image_size
    return [rng.standard_normal((1, t.channels, s, s)).astype(np.float32) for t in cfg.tasks]


def build_artifacts(cfg: ModelConfig, root: Path) -> tuple[Path, Path]:
    """Checkpoint, export (ONNX + OpenVINO, checks skipped: tests cover them) and the plain full graph."""
    torch.manual_seed(0)
    checkpoint = root / "checkpoint"
    save_checkpoint(build_model(cfg).eval(), default_card(cfg), checkpoint)
    out = root / "export"
    export_onnx(checkpoint, out, check=False)
    export_openvino(out, check=False)
    export_full_graph(checkpoint, root / "full.onnx")
    return checkpoint, out


def authors_way(checkpoint: Path, samples: int) -> Callable[[list[np.ndarray]], object]:
    model, _ = load_checkpoint(checkpoint)
    set_dropout_mode(model, "mc")

    def run(images: list[np.ndarray]) -> list[np.ndarray]:
        xs = [torch.from_numpy(x) for x in images]
        with torch.inference_mode():
            return [[torch.softmax(z, -1).numpy() for z in model(xs)] for _ in range(samples)]

    return run


def engine_row(name: str, path: Path, samples: int, threads: int) -> Callable[[list[np.ndarray]], object]:
    runtime = open_runtime(name, path, RuntimeOptions(threads=threads))
    cfg = EngineConfig(samples=samples, max_rows=samples)  # one suffix call of T rows

    def run(images: list[np.ndarray]) -> dict[str, np.ndarray]:
        return run_mc([runtime], images, cfg)

    return run


def onnxruntime_full(path: Path, samples: int, threads: int) -> Callable[[list[np.ndarray]], object]:
    import onnxruntime as ort

    options = ort.SessionOptions()  # the settings of drifa_edge.runtimes.onnxruntime
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def run(images: list[np.ndarray]) -> list[np.ndarray]:
        return session.run(
            None, {n: np.repeat(x, samples, axis=0) for n, x in zip(names, images, strict=True)}
        )

    return run


def openvino_full(path: Path, samples: int, threads: int) -> Callable[[list[np.ndarray]], object]:
    import openvino as ov

    core = ov.Core()  # the settings of drifa_edge.runtimes.openvino for fp32 on CPU
    config = {
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "f32",
        "INFERENCE_NUM_THREADS": str(threads),
    }
    compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
    request = compiled.create_infer_request()
    names = [i.get_any_name() for i in compiled.inputs]

    def run(images: list[np.ndarray]) -> object:
        return request.infer({n: np.repeat(x, samples, axis=0) for n, x in zip(names, images, strict=True)})

    return run


def measure(
    rows: dict[str, Callable], images: list[np.ndarray], warmup: int, repeats: int
) -> dict[str, list]:
    times: dict[str, list[float]] = {name: [] for name in rows}
    for r in range(warmup + repeats):
        for name, run in rows.items():
            t = time.perf_counter()
            run(images)
            if r >= warmup:
                times[name].append((time.perf_counter() - t) * 1e3)
    return times


def machine() -> dict:
    cpu = ""
    try:
        cpu = next(
            line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "python": sys.version.split()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="tiny model (smoke test)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = model_config(args.quick)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        checkpoint, export = build_artifacts(cfg, Path(tmp))
        export_s = time.perf_counter() - t
        full_xml = Path(tmp) / "full.xml"
        import openvino as ov

        ov.save_model(ov.convert_model(str(Path(tmp) / "full.onnx")), str(full_xml), compress_to_fp16=False)
        rows = {
            "authors": authors_way(checkpoint, args.samples),
            "torch-engine": engine_row("torch", checkpoint, args.samples, args.threads),
            "onnxruntime-engine": engine_row("onnxruntime", export, args.samples, args.threads),
            "onnxruntime-full": onnxruntime_full(Path(tmp) / "full.onnx", args.samples, args.threads),
            "openvino-engine": engine_row("openvino", export, args.samples, args.threads),
            "openvino-full": openvino_full(full_xml, args.samples, args.threads),
        }
        times = measure(rows, case_images(cfg), args.warmup, args.repeats)
    ms = {name: statistics.median(v) for name, v in times.items()}
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {**machine(), "load_avg_before": load_before, "load_avg_after": os.getloadavg()},
        "versions": package_versions(),
        "config": {
            "model": "paper" if not args.quick else "quick",
            "image_size": cfg.image_size,
            "width": cfg.width,
            "samples": args.samples,
            "cases": 1,
            "threads": args.threads,
            "warmup": args.warmup,
            "repeats": args.repeats,
            "precision": "fp32",
            "export_seconds": round(export_s, 1),
        },
        "ms_per_case": {k: round(v, 2) for k, v in ms.items()},
        "ms_all": {k: [round(x, 2) for x in v] for k, v in times.items()},
        "speedup_vs_authors": {k: round(ms["authors"] / v, 3) for k, v in ms.items()},
        "prefix_once_vs_full_graph": {
            rt: round(ms[f"{rt}-full"] / ms[f"{rt}-engine"], 3) for rt in ("onnxruntime", "openvino")
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        json.dumps(
            {k: result[k] for k in ("ms_per_case", "speedup_vs_authors", "prefix_once_vs_full_graph")},
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
