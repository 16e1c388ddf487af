"""Where the MC suffix spends its time, per op type, on OpenVINO CPU (per-layer performance counters).

For every build (an export folder) and precision (fp32, bf16 hint, int8 = the NNCF build) the
MC suffix graph is compiled the way the OpenVINO runtime compiles it for one case at T rows
(``drifa_edge.runtimes.openvino``: the rows split over one stream per thread, each request
static-shaped, THROUGHPUT hint), with ``PERF_COUNT`` on. Each timed call starts every request and
waits for all of them; the counters of every request are summed, so the per-op numbers are
*CPU time* per call (two streams: up to twice the wall time), the per-call wall time beside them.
Builds are timed interleaved (call by call, round robin) so load from other processes falls on
each alike; the wall-time ratios are the claim, the absolute numbers depend on the load.

Nodes are attributed twice: by the op type OpenVINO executed (``node_type``, e.g. Convolution,
Eltwise, Reduce, RandomUniform, Reorder, FakeQuantize), and by the model part their name comes
from (dropout masks, MFA / MIFA attention, residual convolutions...), from the exporter's
node names (``/net/branches.0/drops.0/RandomUniformLike`` ...).

    python benchmarks/suffix_ops.py --build before=/tmp/exp-a --build after=/tmp/exp-b \
        --out benchmarks/results/suffix_ops.json
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from drifa_edge.artifact import layout  # noqa: E402
from drifa_edge.artifact.card import read_card  # noqa: E402
from drifa_edge.runtimes.base import RuntimeOptions  # noqa: E402
from drifa_edge.runtimes.cpu import cpu_flags  # noqa: E402
from drifa_edge.runtimes.openvino import _compile_config, split_rows, suffix_streams  # noqa: E402

ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")
# model part of a node, from the exporter's node names (first match wins)
PARTS = (
    ("dropout masks", ("drops.", "final_drop", "RandomUniform", "mask")),
    ("MIFA (cross-modal attention)", ("mifas.",)),
    ("MFA (HIFA + CLIA attention)", ("mfa", "hifa", "clia")),
    ("residual 3x3 / shortcut convs, BN, ReLU", ("blocks.", "conv", "bn", "shortcut")),
    ("heads, pooling, concat", ("heads", "Concat", "ReduceMean", "Mean")),
)


def part_of(name: str) -> str:
    for part, keys in PARTS:
        if any(k in name for k in keys):
            return part
    return "other"


# ---- what-if rewrites of a compiled-to-be suffix: levers measured here and not shipped ----
def one_draw(model) -> None:
    """The 13 RandomUniform (one per dropout site) replaced by one draw of their total size per
    row, sliced and reshaped per site (static shapes only): fewer ops, as many random numbers."""
    from openvino import opset8

    randoms = [op for op in model.get_ordered_ops() if op.get_type_name() == "RandomUniform"]
    shapes = [tuple(op.get_output_shape(0)) for op in randoms]
    sizes = [int(np.prod(s[1:])) for s in shapes]
    first = randoms[0]
    kind = first.get_attributes()["output_type"]
    draw = opset8.random_uniform(
        opset8.constant(np.array([shapes[0][0], sum(sizes)], np.int64)),
        first.input_value(1), first.input_value(2), kind, 0, 0,
    )  # fmt: skip
    start = 0
    for op, shape, size in zip(randoms, shapes, sizes, strict=True):
        part = opset8.slice(
            draw, *(opset8.constant(np.array([v], np.int64)) for v in (start, start + size, 1, 1))
        )
        op.output(0).replace(
            opset8.reshape(part, opset8.constant(np.array(shape, np.int64)), False).output(0)
        )
        start += size
    model.validate_nodes_and_infer_types()


def channels_last_draw(model) -> None:
    """Each RandomUniform drawn as (B, H, W, C) and transposed to (B, C, H, W): the uniforms in
    the channels-last order the CPU plugin computes in (hoping to drop the mask Reorders)."""
    from openvino import opset8

    for op in [op for op in model.get_ordered_ops() if op.get_type_name() == "RandomUniform"]:
        b, c, h, w = op.get_output_shape(0)
        a = op.get_attributes()
        draw = opset8.random_uniform(
            opset8.constant(np.array([b, h, w, c], np.int64)), op.input_value(1), op.input_value(2),
            a["output_type"], a["global_seed"], a["op_seed"],
        )  # fmt: skip
        op.output(0).replace(
            opset8.transpose(draw, opset8.constant(np.array([0, 3, 1, 2], np.int64))).output(0)
        )
    model.validate_nodes_and_infer_types()


def tanh_sigmoid(model) -> None:
    """sigmoid(x) as 0.5 * tanh(x / 2) + 0.5 (the same function; another kernel)."""
    from openvino import opset8

    for op in [op for op in model.get_ordered_ops() if op.get_type_name() == "Sigmoid"]:
        half = opset8.constant(np.float32(0.5))
        new = opset8.add(opset8.multiply(opset8.tanh(opset8.multiply(op.input_value(0), half)), half), half)
        op.output(0).replace(new.output(0))
    model.validate_nodes_and_infer_types()


WHAT_IF = {"one-draw": one_draw, "channels-last-draw": channels_last_draw, "tanh-sigmoid": tanh_sigmoid}


def compile_suffix(
    core, root: Path, precision: str, rows: int, threads: int | None, what_if: str | None = None
):
    """(compiled model, requests, rows per request) as the runtime compiles the MC suffix."""
    xml = root / layout.openvino_files("suffix", precision)[0]
    model = core.read_model(str(xml))
    options = RuntimeOptions(precision=precision, threads=threads)
    streams = suffix_streams("CPU", options)
    parts, per = split_rows(rows, streams)
    if parts > 1:
        model.reshape({p.get_any_name(): [per, *(d.get_length() for d in p.get_partial_shape()[1:])]
                       for p in model.inputs})  # fmt: skip
    if what_if:
        WHAT_IF[what_if](model)
    config = _compile_config(core, "CPU", options, streams if parts > 1 else 1)
    config["PERF_COUNT"] = "YES"
    compiled = core.compile_model(model, "CPU", config)
    return compiled, [compiled.create_infer_request() for _ in range(parts)], per


def feeds_for(root: Path, per: int, seed: int) -> dict[str, np.ndarray]:
    """Random prefix outputs of one case, repeated per row (what the engine feeds)."""
    card = read_card(root, verify=False)
    cfg = card.model
    rng = np.random.default_rng(seed)
    side = cfg.image_size // 4
    width = cfg.stage_widths[0]
    return {
        layout.feature_name(t): np.repeat(
            np.abs(rng.standard_normal((1, width, side, side))).astype(np.float32), per, axis=0
        )
        for t in card.task_names
    }


def call(requests, feeds) -> float:
    start = time.perf_counter()
    for r in requests:
        r.start_async(feeds)
    for r in requests:
        r.wait()
    return time.perf_counter() - start


def counters(requests) -> list[dict[str, Any]]:
    out = []
    for r in requests:
        for p in r.get_profiling_info():
            if p.status.name == "NOT_RUN":
                continue
            out.append(
                {
                    "name": p.node_name,
                    "type": p.node_type,
                    "exec": p.exec_type,
                    "us": p.real_time.total_seconds() * 1e6,
                }
            )
    return out


def summarise(samples: list[list[dict[str, Any]]], walls: list[float], requests: int) -> dict[str, Any]:
    """Per op type, per executed kernel and per model part, in ms per call summed over requests.

    Each node's time is its *minimum* over the calls (then summed): on a shared CPU a node is
    only ever slowed down by another process (preempted mid-kernel), so the minimum estimates
    its uncontended cost far better than the median, which these tables also give per op type."""
    per_node: dict[tuple[str, str, str], list[float]] = collections.defaultdict(list)
    for sample in samples:
        node_ms: collections.Counter = collections.Counter()
        for node in sample:  # the same node name in every request (stream): summed per call
            node_ms[node["type"], node["exec"], node["name"]] += node["us"] / 1e3
        for key, ms in node_ms.items():
            per_node[key].append(ms)
    by_type, by_type_med, by_part, by_exec = (collections.Counter() for _ in range(4))
    nodes = collections.Counter()
    for (kind, exec_type, name), times in per_node.items():
        best = min(times)
        by_type[kind] += best
        by_type_med[kind] += statistics.median(times)
        by_part[part_of(name)] += best
        by_exec[f"{kind} [{exec_type}]"] += best
        nodes[kind] += 1
    total = sum(by_type.values())
    top_nodes = sorted(
        ((f"{k} [{e}] {n}", min(v)) for (k, e, n), v in per_node.items()), key=lambda kv: -kv[1]
    )
    return {
        "wall_ms": {"p50": statistics.median(walls) * 1e3, "min": min(walls) * 1e3, "n": len(walls)},
        "cpu_ms_per_call_min_sum": round(total, 3),
        "cpu_ms_per_call_median_sum": round(sum(by_type_med.values()), 3),
        "requests_per_call": requests,
        "executed_nodes": sum(nodes.values()),
        "by_op_type": [
            {
                "type": k,
                "ms": round(v, 3),
                "share": round(v / total, 4),
                "ms_median": round(by_type_med[k], 3),
                "nodes": nodes[k],
            }
            for k, v in by_type.most_common()
        ],  # fmt: skip
        "by_part": {k: round(v, 3) for k, v in by_part.most_common()},
        "by_kernel": [{"kernel": k, "ms": round(v, 3)} for k, v in by_exec.most_common(25)],
        "top_nodes": [{"node": k, "ms": round(v, 3)} for k, v in top_nodes[:40]],
        "_all_nodes": {k: round(v, 4) for k, v in top_nodes},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", action="append", required=True, help="NAME=EXPORT_FOLDER (repeatable)")
    ap.add_argument("--precisions", default="fp32,bf16,int8")
    ap.add_argument("--samples", type=int, default=30, help="MC rows of one case (T)")
    ap.add_argument("--calls", type=int, default=20, help="timed calls per build x precision")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument(
        "--what-if",
        default="",
        help=f"comma list of {sorted(WHAT_IF)}: extra cells, the last build rewritten (int8 and fp32)",
    )
    ap.add_argument("--nodes-out", type=Path, default=None, help="every node's time (JSON), for digging")
    args = ap.parse_args()

    import openvino as ov

    core = ov.Core()
    builds = dict(b.split("=", 1) for b in args.build)
    precisions = args.precisions.split(",")
    flags = cpu_flags()
    if "bf16" in precisions and not {"avx512_bf16", "amx_bf16"} & set(flags):
        precisions.remove("bf16")  # emulated bf16 is no row worth timing
    cells = {}
    for name, root in builds.items():
        for precision in precisions:
            compiled, requests, per = compile_suffix(core, Path(root), precision, args.samples, args.threads)
            feeds = feeds_for(Path(root), per, seed=0)
            for _ in range(args.warmup):
                call(requests, feeds)
            cells[name, precision] = {"requests": requests, "feeds": feeds, "walls": [], "samples": []}
    last_name, last_root = list(builds.items())[-1]
    for what_if in filter(None, args.what_if.split(",")):
        for precision in [p for p in precisions if p in ("fp32", "int8")]:
            compiled, requests, per = compile_suffix(
                core, Path(last_root), precision, args.samples, args.threads, what_if
            )
            feeds = feeds_for(Path(last_root), per, seed=0)
            for _ in range(args.warmup):
                call(requests, feeds)
            cells[f"{last_name}+{what_if}", precision] = {
                "requests": requests,
                "feeds": feeds,
                "walls": [],
                "samples": [],
            }
    for _ in range(args.calls):  # round robin: load changes fall on every cell alike
        for cell in cells.values():
            cell["walls"].append(call(cell["requests"], cell["feeds"]))
            cell["samples"].append(counters(cell["requests"]))
    result = {
        "format": "drifa-edge-suffix-ops/1",
        "command": " ".join(["python", *sys.argv]),
        "openvino": ov.get_version(),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "isa": [f for f in ISA_FLAGS if f in flags],
            "amx": "not measured (no AMX on this CPU)" if "amx_tile" not in flags else "present",
            "cpu_flags": list(flags),
            "loadavg_end": list(os.getloadavg()),
        },
        "samples": args.samples,
        "builds": builds,
        "cells": {
            f"{n}/{p}": summarise(c["samples"], c["walls"], len(c["requests"])) for (n, p), c in cells.items()
        },
    }
    base = {p: result["cells"].get(f"{next(iter(builds))}/{p}") for p in precisions}
    for key, cell in result["cells"].items():
        name, precision = key.rsplit("/", 1)
        ref = base[precision]
        cell["wall_ratio_vs_first_build"] = round(ref["wall_ms"]["p50"] / cell["wall_ms"]["p50"], 3)
    if args.nodes_out:  # every node's median time, for digging (large; not a recorded result)
        args.nodes_out.write_text(
            json.dumps({k: c["_all_nodes"] for k, c in result["cells"].items()}, indent=0)
        )
    for cell in result["cells"].values():
        del cell["_all_nodes"]
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    for key, cell in result["cells"].items():
        print(f"\n== {key}: wall p50 {cell['wall_ms']['p50']:.1f} ms, CPU {cell['cpu_ms_per_call_min_sum']:.1f} ms/call (node minima), "
              f"x{cell['wall_ratio_vs_first_build']} vs first build")  # fmt: skip
        for row in cell["by_op_type"][:14]:
            print(
                f"  {row['type']:<22} {row['ms']:8.2f} ms {100 * row['share']:5.1f} %  nodes {row['nodes']}"
            )
        for part, ms in cell["by_part"].items():
            print(f"  [{part}] {ms:.2f} ms")
        for row in cell["by_kernel"][:10]:
            print(f"  {row['kernel']:<50} {row['ms']:8.2f} ms")


if __name__ == "__main__":
    main()
