"""OpenVINO INT8 against OpenVINO FP32 / BF16 and the authors' way, T = 30, in one run.

Paper configuration (two RGB 128x128 modalities, widths 64..512, random weights; the
tasks and classes of ``runs/real-small`` when it exists), one case per call:

- ``authors``: T sequential eager full passes of the PyTorch model at batch 1
  (``benchmarks/mc_inference.py``'s baseline, what the notebook does);
- ``openvino-fp32`` / ``-bf16`` / ``-int8``: the drifa-edge engine over the OpenVINO
  runtime as a user opens it (``open_runtime``), prefix once per case, the suffix on
  30 rows; INT8 is ``quantize_openvino`` with the default ``QuantizeConfig``;
- tuned rows (same graphs, ``*-static``): the levers the runtime does not use yet -
  static input shapes (prefix 1 row, suffix 30 rows, compiled once), the bf16 hint
  for INT8's float parts, and the THROUGHPUT hint.

Timing rounds are interleaved (every row once per round, medians), so load from
other processes hits every row alike; the load average is recorded. Also: model
sizes on disk, quantization time, and cold-start load time with and without
OpenVINO's model cache (``CACHE_DIR``).

    python benchmarks/openvino_int8.py --threads 1      # writes benchmarks/results/openvino_int8.json
    python benchmarks/openvino_int8.py --quick --out /tmp/ov.json   # tiny model, smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from int8_levers import SHARED_DATA, IRRuntime, export_model, speed_checkpoint  # noqa: E402
from mc_inference import authors_model, cpu_summary, interleaved, run_authors  # noqa: E402

from drifa_edge.artifact import layout  # noqa: E402
from drifa_edge.artifact.card import default_card, read_card  # noqa: E402
from drifa_edge.inference.engine import EngineConfig, run_mc_logits  # noqa: E402
from drifa_edge.model.config import paper_config  # noqa: E402
from drifa_edge.quantize.config import QuantizeConfig  # noqa: E402
from drifa_edge.runtimes.base import RuntimeOptions, open_runtime  # noqa: E402

T = 30
TARGETS = {"int8_vs_fp32": 2.5, "int8_vs_authors": 15.0}


def folder_mb(root: Path, precision: str) -> float:
    files = [*layout.openvino_files("prefix", precision), *layout.openvino_files("suffix", precision)]
    return round(sum((root / f).stat().st_size for f in files) / 2**20, 2)


def load_seconds(root: Path, precision: str, threads: int | None, cache: Path | None) -> float:
    extra = {"cache_dir": str(cache)} if cache else {}
    t = time.perf_counter()
    rt = open_runtime("openvino", root, RuntimeOptions(precision=precision, threads=threads, extra=extra))
    seconds = time.perf_counter() - t
    rt.close()
    return round(seconds, 2)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=None, help="threads for every row (default: the runtime's)")
    p.add_argument("--rounds", type=int, default=10, help="timed rounds (interleaved)")
    p.add_argument("--subset", type=int, default=32, help="calibration cases for the INT8 build")
    p.add_argument(
        "--checkpoint", type=Path, default=ROOT / "runs" / "real-small", help="tasks + calibration data"
    )
    p.add_argument("--quick", action="store_true", help="tiny model: a smoke test")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "drifa-openvino-int8")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "openvino_int8.json")
    args = p.parse_args(argv)
    import openvino as ov
    import torch

    from drifa_edge.quantize.nncf import quantize_openvino

    load_start = os.getloadavg()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.checkpoint.is_dir():
        card = read_card(args.checkpoint)
        calib = [f"{t}={SHARED_DATA / t}" for t in card.task_names]
        if not all((SHARED_DATA / t).is_dir() for t in card.task_names):
            calib = ["synthetic"]
    else:
        card, calib = default_card(paper_config()), ["synthetic"]
    work = args.work / ("quick" if args.quick else "paper")
    checkpoint = speed_checkpoint(card, work / "ckpt", args.quick)
    root = export_model(checkpoint, work / "export")
    config = QuantizeConfig(subset=args.subset)
    t = time.perf_counter()
    section = quantize_openvino(root, calib, config)
    quantize_wall = round(time.perf_counter() - t, 1)
    scard = read_card(root)

    rts = {
        prec: open_runtime("openvino", root, RuntimeOptions(precision=prec, threads=args.threads))
        for prec in ("fp32", "bf16", "int8")
    }
    core = ov.Core()
    fp32 = {g: core.read_model(str(root / layout.openvino_files(g, "fp32")[0])) for g in ("prefix", "suffix")}
    int8 = {g: core.read_model(str(root / layout.openvino_files(g, "int8")[0])) for g in ("prefix", "suffix")}
    th = args.threads
    st = {"static_cases": 1}
    tuned = {
        "openvino-fp32-static": IRRuntime(core, scard, *fp32.values(), "fp32", "f32", th, **st),
        "openvino-bf16-static": IRRuntime(core, scard, *fp32.values(), "bf16", "bf16", th, **st),
        "openvino-int8-static": IRRuntime(core, scard, *int8.values(), "int8", "f32", th, **st),
        "openvino-int8+bf16-static": IRRuntime(core, scard, *int8.values(), "int8", "bf16", th, **st),
        "openvino-int8-throughput-hint": IRRuntime(
            core, scard, int8["prefix"], int8["suffix"], "int8", "f32", th, perf="THROUGHPUT"
        ),
    }
    rng = np.random.default_rng(0)
    s = scard.model.image_size
    one = [rng.standard_normal((1, t.channels, s, s)).astype(np.float32) for t in scard.model.tasks]
    engine = EngineConfig(samples=T, seed=None, max_rows=32, prefix_once=True)
    model = authors_model(checkpoint, args.threads)
    calls = {"authors": lambda: run_authors(model, one, T)}
    for name, rt in [*((f"openvino-{k}", v) for k, v in rts.items()), *tuned.items()]:
        calls[name] = lambda rt=rt: run_mc_logits([rt], one, engine)
    times = interleaved(calls, args.rounds, 2)
    ms = {n: round(1000 * statistics.median(v), 1) for n, v in times.items()}

    with tempfile.TemporaryDirectory() as cache:
        cold = {
            prec: {
                "no_cache": load_seconds(root, prec, th, None),
                "cache_first": load_seconds(root, prec, th, Path(cache) / prec),
                "cache_warm": load_seconds(root, prec, th, Path(cache) / prec),
            }
            for prec in ("fp32", "int8")
        }
    best_int8 = min((n for n in ms if "int8" in n), key=ms.get)
    result = {
        "benchmark": "openvino_int8",
        "command": "python benchmarks/openvino_int8.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "model": scard.model.to_dict(),
        "T": T,
        "threads": args.threads,
        "ms_per_case": ms,
        "ms_all_rounds": {n: [round(1000 * x, 1) for x in v] for n, v in times.items()},
        "ratios": {
            "int8_vs_fp32": round(ms["openvino-fp32"] / ms["openvino-int8"], 2),
            "int8_vs_authors": round(ms["authors"] / ms["openvino-int8"], 2),
            "bf16_vs_fp32": round(ms["openvino-fp32"] / ms["openvino-bf16"], 2),
            "fp32_vs_authors": round(ms["authors"] / ms["openvino-fp32"], 2),
            "best_int8": best_int8,
            "best_int8_vs_fp32": round(ms["openvino-fp32"] / ms[best_int8], 2),
            "best_int8_vs_fp32_static": round(ms["openvino-fp32-static"] / ms[best_int8], 2),
            "best_int8_vs_authors": round(ms["authors"] / ms[best_int8], 2),
        },
        "targets": TARGETS,
        "sizes_mb": {"fp32": folder_mb(root, "fp32"), "int8": folder_mb(root, "int8")},
        "quantization": {
            "wall_s": quantize_wall,
            "seconds": section.get("seconds"),
            "reused": section.get("reused"),
            "config": section.get("config"),
            "calibration": {k: section["calibration"][k] for k in ("subset", "seed", "sha256")},
        },
        "load_seconds": cold,
        "environment": {
            "cpu": cpu_summary(),
            "openvino": ov.get_version(),
            "loadavg_start": [round(x, 2) for x in load_start],
            "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("ms_per_case", "ratios", "sizes_mb")}, indent=1))
    return result


if __name__ == "__main__":
    main()
