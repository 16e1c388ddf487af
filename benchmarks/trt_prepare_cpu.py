"""TensorRT graph preparation on a CPU: FP16 graphs and Q/DQ graphs, checked with onnxruntime.

What it measures, on the tiny DRIFA-Net of the tests (2 tasks, 32 px, width 0.125,
random weights, seed 0) — no GPU, no TensorRT:

- FP16 (TensorRT 11.x path): per graph, max |logit - FP32 logit| / max |FP32 logit| under
  identical seeded MC masks, whether the suffix is still stochastic, conversion seconds;
- Q/DQ (INT8 path): placement-rule problems (this rule and, when the pre-change writer is
  in git history, the previous rule), shared-DQ inputs, prefix error (max |diff| / max
  |feature|) and suffix error (max |diff| / std of FP32 logits, same masks), seconds;
  for the ``drifa`` backend also the same graph with DQ outputs left shared
  (onnxruntime's default) and the previous hand-written writer's seconds (ratio measured
  in the same run).

Run (main venv):   python benchmarks/trt_prepare_cpu.py --out benchmarks/results
Run (ModelOpt venv, see README): python benchmarks/trt_prepare_cpu.py --backend modelopt
    --out benchmarks/results
Writes ``trt_prepare_cpu[-modelopt].json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PREVIOUS_WRITER = "6678315"  # last commit with the hand-written Q/DQ writer
FEATS, IMAGES = ["feat_derm", "feat_xray"], ["image_derm", "image_xray"]


def machine() -> dict:
    cpu, flags = "", []
    try:
        info = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
        flags = sorted(
            f
            for f in next(line.split(":", 1)[1].split() for line in info if line.startswith("flags"))
            if f.startswith(("avx", "amx", "f16c", "fma"))
        )
    except (OSError, StopIteration):
        pass
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_flags": flags,
        "logical_cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "load_avg": list(os.getloadavg()),
    }


def versions() -> dict:
    out = {}
    for name in ("onnx", "onnxruntime", "onnxconverter_common", "modelopt", "torch"):
        try:
            out[name] = __import__(name).__version__
        except Exception:  # absent or broken: recorded as such
            out[name] = None
    return out


def tiny_export(root: Path) -> Path:
    import torch

    from drifa_edge.artifact.card import default_card
    from drifa_edge.artifact.checkpoint import save_checkpoint
    from drifa_edge.export.onnx import export_onnx
    from drifa_edge.model.config import ModelConfig, TaskSpec
    from drifa_edge.model.drifa import build_model

    cfg = ModelConfig(
        tasks=(
            TaskSpec("derm", ("nevus", "melanoma", "other")),
            TaskSpec("xray", ("normal", "pneumonia"), 1),
        ),
        image_size=32,
        width=0.125,
    )
    torch.manual_seed(0)
    save_checkpoint(build_model(cfg).eval(), default_card(cfg), root / "ckpt")
    export_onnx(root / "ckpt", root / "out", check=False)
    return root / "out" / "onnx"


def session(model):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def fp16_rows(onnx_dir: Path, work: Path, backend: str) -> dict:
    import onnx

    from drifa_edge.quantize import mixed_precision as mp

    rng = np.random.default_rng(0)
    rows = {}
    for graph in ("prefix", "suffix", "suffix_masks"):
        src = onnx_dir / f"{graph}.onnx"
        model = onnx.load(str(src))
        feeds = {}
        for i in model.graph.input:
            shape = [d.dim_value or 12 for d in i.type.tensor_type.shape.dim]
            draw = rng.random if i.name.startswith("uniform_") else rng.standard_normal
            feeds[i.name] = draw(shape).astype(np.float32)
        start = time.perf_counter()
        report = mp.convert_fp16(src, work / f"{graph}.fp16.onnx", backend)
        seconds = time.perf_counter() - start
        result = mp.compare_fp16(
            src, work / f"{graph}.fp16.onnx", feeds, [o.name for o in model.graph.output]
        )
        rows[graph] = {**report, **result, "seconds": round(seconds, 2)}
    return rows


def previous_writer(work: Path):
    """The hand-written writer from git history (commit PREVIOUS_WRITER) as a module, or None."""
    try:
        src = subprocess.run(
            ["git", "-C", str(REPO), "show", f"{PREVIOUS_WRITER}:drifa_edge/quantize/tensorrt_qdq.py"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    path = work / "previous_qdq.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("previous_qdq", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["previous_qdq"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def qdq_rows(onnx_dir: Path, work: Path, backend: str) -> dict:
    import onnx

    from drifa_edge.quantize import tensorrt_qdq as q

    rng = np.random.default_rng(1)
    images = [
        rng.standard_normal((24, 3, 32, 32), np.float32),
        rng.standard_normal((24, 1, 32, 32), np.float32),
    ]
    calib, held = [x[:16] for x in images], [x[16:] for x in images]
    feats = q.prefix_features(onnx_dir / "prefix.onnx", calib, (1, 4, 8), IMAGES, FEATS)
    feeds = {
        "prefix": [dict(zip(IMAGES, b, strict=True)) for b in q.calibration_batches(calib, (1, 4, 8))],
        "suffix": [
            dict(zip(FEATS, b, strict=True))
            for b in q.calibration_batches(q.tile_cases(feats, 4), (1, 30, 60))
        ],
    }
    prefix = session(onnx.load(str(onnx_dir / "prefix.onnx")))
    held_feeds = {
        "prefix": dict(zip(IMAGES, held, strict=True)),
        "suffix": dict(
            zip(FEATS, q.tile_cases(prefix.run(FEATS, dict(zip(IMAGES, held, strict=True))), 4), strict=True)
        ),
    }
    previous = previous_writer(work)

    def error(graph: str, path: Path) -> float:
        ref_model, got_model = onnx.load(str(onnx_dir / f"{graph}.onnx")), onnx.load(str(path))
        q.seed_random_nodes(ref_model)
        q.seed_random_nodes(got_model)
        ref = session(ref_model).run(None, held_feeds[graph])
        got = session(got_model).run(None, held_feeds[graph])
        if graph == "prefix":  # features: max |diff| / max |feature|
            return max(float(np.abs(r - g).max() / np.abs(r).max()) for r, g in zip(ref, got, strict=True))
        return max(float(np.abs(r - g).max() / r.std()) for r, g in zip(ref, got, strict=True))

    rows = {}
    for graph in ("prefix", "suffix"):
        dst = work / f"{graph}.{backend}.qdq.onnx"
        start = time.perf_counter()
        report = q.quantize_for_tensorrt(
            onnx_dir / f"{graph}.onnx", dst, feeds[graph], q.QDQConfig(backend=backend)
        )
        row = {**report, "seconds": round(time.perf_counter() - start, 2), "error": error(graph, dst)}
        model = onnx.load(str(dst))
        row["rule_problems"] = len(q.check_qdq_placement(model))
        if previous is not None:
            row["previous_rule_problems"] = len(previous.check_qdq_placement(model))
        if backend == "drifa":
            shared = work / f"{graph}.shared.qdq.onnx"
            keep = q.dedicate_dequantized
            q.dedicate_dequantized = lambda model, op_types=q.QUANTIZED_OPS: 0  # onnxruntime's shared DQ
            try:
                q._quantize_ort(onnx_dir / f"{graph}.onnx", shared, feeds[graph], q.QDQConfig())
            finally:
                q.dedicate_dequantized = keep
            shared_model = onnx.load(str(shared))
            row["shared_dq_variant"] = {
                "shared_dq_inputs": q.shared_dequantized(shared_model),
                "rule_problems": len(q.check_qdq_placement(shared_model)),
                "error": error(graph, shared),
            }
            if previous is not None:
                start = time.perf_counter()
                previous.quantize_for_tensorrt(
                    onnx_dir / f"{graph}.onnx",
                    work / f"{graph}.prev.onnx",
                    feeds[graph],
                    previous.QDQConfig("drifa"),
                )
                prev_seconds = time.perf_counter() - start
                row["previous_writer"] = {
                    "seconds": round(prev_seconds, 2),
                    "error": error(graph, work / f"{graph}.prev.onnx"),
                    "ort_over_previous_seconds": round(row["seconds"] / prev_seconds, 2),
                }
        rows[graph] = row
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--backend", choices=("drifa", "modelopt"), default="drifa")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        "versions": versions(),
        "model": "tiny DRIFA-Net: 2 tasks, 32 px, width 0.125, random weights (seed 0)",
    }
    with tempfile.TemporaryDirectory(prefix="drifa-trt-prep-") as tmp:
        work = Path(tmp)
        onnx_dir = tiny_export(work)
        fp16_backend = "modelopt" if args.backend == "modelopt" else "onnxconverter"
        result["fp16"] = {"backend": fp16_backend, "graphs": fp16_rows(onnx_dir, work, fp16_backend)}
        result["qdq"] = {"backend": args.backend, "graphs": qdq_rows(onnx_dir, work, args.backend)}
    result["machine"]["load_avg_after"] = list(os.getloadavg())
    args.out.mkdir(parents=True, exist_ok=True)
    name = "trt_prepare_cpu" + ("-modelopt" if args.backend == "modelopt" else "") + ".json"
    (args.out / name).write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps({k: result[k] for k in ("fp16", "qdq")}, indent=1, default=str))


if __name__ == "__main__":
    main()
