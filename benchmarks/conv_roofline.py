"""How close the MC suffix's convolutions run to what this CPU's convolution kernels can do, and
what that leaves for a speed target (issue 19: fixed T = 30, one case, >= 20x the authors' way).

The suffix graph of an OpenVINO build is compiled the way the runtime compiles one stream's part
of a case (``--rows`` static rows, one request, ``--threads`` threads, the runtime's own compile
settings from :func:`drifa_edge.runtimes.openvino._compile_config`) with ``PERF_COUNT`` on. For
every executed Convolution node, the multiply-accumulates are counted from its output shape and
weight shape (N * C_out * H_out * W_out * C_in/groups * k_h * k_w) and divided by the node's own
time (OpenVINO's per-layer ``real_time``, averaged over ``--calls``). Written per kernel size and
output width: GMAC/s, and the best single node's rate, which is a lower bound of what the
convolution kernel reaches on this CPU. From these, the time per case if every convolution ran at
the best node's rate and everything else took no time at all (a bound no build can beat).

    python benchmarks/conv_roofline.py EXPORT --precision int8 --rows 15 --threads 1 \
        --authors-ms 1791 --out benchmarks/results/conv_roofline.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from drifa_edge.artifact import layout  # noqa: E402
from drifa_edge.runtimes.base import RuntimeOptions  # noqa: E402
from drifa_edge.runtimes.cpu import cpu_summary  # noqa: E402
from drifa_edge.runtimes.openvino import _compile_config, compile_with_fallback  # noqa: E402


def conv_macs(op) -> int | None:
    """Multiply-accumulates of one executed Convolution node (None where a shape is dynamic)."""
    try:
        out = [d.get_length() for d in op.get_output_partial_shape(0)]
        weights = [d.get_length() for d in op.input(1).get_partial_shape()]
    except RuntimeError:
        return None
    if len(out) != 4 or len(weights) != 4:
        return None
    return int(np.prod(out)) * weights[1] * weights[2] * weights[3]


def measure(xml: Path, precision: str, rows: int, threads: int, calls: int) -> dict:
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(xml))
    model.reshape(
        {p.get_any_name(): [rows, *(d.get_length() for d in p.get_partial_shape()[1:])] for p in model.inputs}
    )
    config = _compile_config(core, "CPU", RuntimeOptions(precision=precision, threads=threads))
    compiled = compile_with_fallback(core, model, "CPU", {**config, "PERF_COUNT": "YES"})
    request = compiled.create_infer_request()
    rng = np.random.default_rng(0)
    feed = {
        p.get_any_name(): np.abs(rng.standard_normal([rows, *(d.get_length() for d in p.get_partial_shape()[1:])]))
        .astype(np.float32)
        for p in model.inputs
    }  # fmt: skip
    for _ in range(3):
        request.infer(feed)
    node_s: dict[str, float] = {}
    walls = []
    for _ in range(calls):
        t = time.perf_counter()
        request.infer(feed)
        walls.append(time.perf_counter() - t)
        for info in request.get_profiling_info():
            node_s[info.node_name] = node_s.get(info.node_name, 0.0) + info.real_time.total_seconds() / calls
    ops = {op.get_friendly_name(): op for op in compiled.get_runtime_model().get_ops()}
    groups: dict[str, dict] = {}
    best = None
    conv_s = conv_macs_total = 0.0
    for name, seconds in node_s.items():
        op = ops.get(name)
        if op is None or op.get_rt_info()["layerType"].astype(str) != "Convolution" or seconds <= 0:
            continue
        macs = conv_macs(op)
        if macs is None:
            continue
        k = op.input(1).get_partial_shape()[2].get_length()
        c_out = op.get_output_partial_shape(0)[1].get_length()
        g = groups.setdefault(f"{k}x{k} -> {c_out}", {"nodes": 0, "gmac": 0.0, "ms": 0.0})
        g["nodes"] += 1
        g["gmac"] += macs / 1e9
        g["ms"] += seconds * 1000
        conv_s += seconds
        conv_macs_total += macs
        rate = macs / seconds / 1e9
        if best is None or rate > best["gmac_per_s"]:
            best = {"node": name, "gmac_per_s": rate, "kernel": op.get_rt_info()["primitiveType"].astype(str)}
    for g in groups.values():
        g["gmac_per_s"] = g["gmac"] / (g["ms"] / 1000)
    all_s = sum(node_s.values())
    return {
        "rows": rows,
        "threads": threads,
        "wall_ms_p50": float(np.median(walls) * 1000),
        "nodes_ms": all_s * 1000,
        "conv_ms": conv_s * 1000,
        "conv_share": conv_s / all_s,
        "conv_gmac": conv_macs_total / 1e9,
        "conv_gmac_per_s": conv_macs_total / conv_s / 1e9,
        "best_conv_node": best,
        "by_kernel_and_width": dict(sorted(groups.items())),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("export", type=Path)
    p.add_argument("--precision", default="int8", choices=("fp32", "bf16", "int8"))
    p.add_argument(
        "--rows", type=int, default=15, help="rows of one stream's part of a case (T=30 over 2 streams: 15)"
    )
    p.add_argument("--threads", type=int, default=1, help="threads of that stream (one stream per core: 1)")
    p.add_argument("--calls", type=int, default=8)
    p.add_argument("--samples", type=int, default=30, help="T: rows per case")
    p.add_argument("--cores", type=int, default=2, help="cores the case runs on (streams x threads)")
    p.add_argument("--authors-ms", type=float, help="the authors' way per case, measured in the same session")
    p.add_argument("--target", type=float, default=20.0, help="speed-up over the authors' way to check")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    xml = args.export / layout.openvino_files("suffix", args.precision)[0]
    m = measure(xml, args.precision, args.rows, args.threads, args.calls)
    per_core_rows = args.samples / args.cores  # rows each core computes for one case
    scale = per_core_rows / args.rows
    bound_ms = (
        1000 * m["conv_gmac"] * scale / m["best_conv_node"]["gmac_per_s"]
    )  # all convs at the best rate, rest free
    result = {
        "benchmark": "conv_roofline",
        "command": "python " + " ".join(sys.argv),
        "machine": cpu_summary(),
        "export": str(args.export),
        "precision": args.precision,
        "measured": m,
        "per_case": {
            "samples": args.samples,
            "cores": args.cores,
            "suffix_ms_now": m["nodes_ms"] * scale,
            "suffix_conv_ms_now": m["conv_ms"] * scale,
            "bound_ms_all_convs_at_best_rate_rest_free": bound_ms,
        },
    }
    if args.authors_ms:
        need = args.authors_ms / args.target
        result["target"] = {
            "authors_ms": args.authors_ms,
            "speedup": args.target,
            "case_ms_needed": need,
            "bound_speedup": args.authors_ms / bound_ms,
            "convs_now_alone_speedup": args.authors_ms / (m["conv_ms"] * scale),
        }
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
