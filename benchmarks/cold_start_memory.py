"""Cold start and memory of a one-case predict: first call after a restart with and without
OpenVINO's model cache, against a warm call, and the peak RSS of the process.

Each scenario is a fresh interpreter (a restart) that opens the build the way ``drifa-edge
predict`` does (``Predictor.open``), predicts one case (the first call), then the same case
``--calls`` more times (warm calls), and reports its VmHWM (peak RSS). Scenarios, in one run:
``no-cache`` (``--cache-dir none``), ``cache-cold`` (an empty cache folder: this run fills it),
``cache-warm`` (the next process over the filled folder). ``--python`` runs the scenarios in
another environment, e.g. a torch-free venv with only ``drifa-edge[openvino]``.

    python benchmarks/cold_start_memory.py EXPORT --precision int8 --python /tmp/edge/bin/python \
        --out benchmarks/results/cold_start_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

WORKER = r"""
import json, sys, time
t_start = time.perf_counter()
import numpy as np
from pathlib import Path
from PIL import Image
from drifa_edge.inference.engine import EngineConfig
from drifa_edge.inference.manifest import Case
from drifa_edge.inference.predictor import Predictor
from drifa_edge.runtimes.base import RuntimeOptions

artifact, precision, cache, samples, calls, tmp = sys.argv[1:7]
def peak_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
t0 = time.perf_counter()
extra = {} if cache == "none" else {"cache_dir": cache}
streams = int(sys.argv[7]) if sys.argv[7] != "default" else None
p = Predictor.open(artifact, "openvino", RuntimeOptions(precision=precision, streams=streams, extra=extra),
                   EngineConfig(samples=int(samples)))
if hasattr(p, "compile_for"):  # what predict does before its first batch (this branch)
    p.compile_for(1)
open_s = time.perf_counter() - t0
rng = np.random.default_rng(0)
inputs = {}
for task in p.card.task_names:
    spec = p.card.preprocess[task]
    shape = (spec.size, spec.size) if spec.channels == 1 else (spec.size, spec.size, 3)
    inputs[task] = Path(tmp) / f"{task}.png"
    Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(inputs[task])
case = Case("bench", inputs)
times = []
for _ in range(1 + int(calls)):
    t0 = time.perf_counter()
    (record,) = p.predict([case])
    times.append(time.perf_counter() - t0)
    assert record["status"] == "ok", record["error"]
print("RESULT " + json.dumps({
    "open_s": open_s, "first_call_s": times[0], "warm_calls_s": times[1:],
    "peak_rss_mb": peak_mb(), "since_start_s": time.perf_counter() - t_start,
    "torch_loaded": "torch" in sys.modules, "nncf_loaded": "nncf" in sys.modules,
    "threads": p.options.threads, "device": p.device,
}))
"""


def run(
    python: str, artifact: Path, precision: str, cache: str, samples: int, calls: int, streams: str
) -> dict:
    with tempfile.TemporaryDirectory(prefix="drifa-cold-") as tmp:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        if python == sys.executable:
            env["PYTHONPATH"] = str(REPO)
        t0 = time.perf_counter()
        proc = subprocess.run(
            [python, "-c", WORKER, str(artifact), precision, cache, str(samples), str(calls), tmp, streams],
            capture_output=True, text=True, env=env, timeout=900,
        )  # fmt: skip
        wall = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if not lines:
        raise SystemExit(f"worker failed:\n{proc.stderr[-3000:]}")
    r = json.loads(lines[-1][len("RESULT ") :])
    warm = sorted(r["warm_calls_s"])[len(r["warm_calls_s"]) // 2]
    r.update(process_wall_s=wall, warm_call_p50_s=warm, first_over_warm=r["first_call_s"] / warm)
    return r


def run_cli(python: str, artifact: Path, precision: str, cache: str, streams: str, samples: int) -> dict:
    """``drifa-edge predict`` of one case in ``python``'s environment: its peak RSS (the child's
    ru_maxrss from wait4) and wall time."""
    import numpy as np
    from PIL import Image

    from drifa_edge.artifact.card import read_card

    card = read_card(artifact, verify=False)
    with tempfile.TemporaryDirectory(prefix="drifa-cli-") as tmp:
        args = []
        for task in card.task_names:
            spec = card.preprocess[task]
            shape = (spec.size, spec.size) if spec.channels == 1 else (spec.size, spec.size, 3)
            path = Path(tmp) / f"{task}.png"
            Image.fromarray(np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)).save(path)
            args += ["--input", f"{task}={path}"]
        cmd = [python, "-c", "import sys; from drifa_edge.cli import main; sys.argv[0] = 'drifa-edge'; main()",
               "predict", str(artifact), *args, "--precision", precision,
               "-T", str(samples), "--cache-dir", cache, "--out", str(Path(tmp) / "out.jsonl")]  # fmt: skip
        if streams != "default":
            cmd += ["--streams", streams]
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        if python == sys.executable:
            env["PYTHONPATH"] = str(REPO)
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        err = proc.stderr.read().decode()[-2000:] if proc.stderr else ""
    if status != 0:
        raise SystemExit(f"drifa-edge predict failed ({status}):\n{err}")
    return {
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "wall_s": wall,
        "command": "drifa-edge " + " ".join(cmd[3:]),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("artifact", type=Path)
    p.add_argument("--precision", default="int8")
    p.add_argument("--python", default=sys.executable, help="interpreter of the environment to measure")
    p.add_argument("--samples", type=int, default=30)
    p.add_argument("--calls", type=int, default=5)
    p.add_argument("--streams", default="default,1", help="comma list: default and/or a stream count")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    sys.path.insert(0, str(REPO))
    from drifa_edge.bench.runner import machine_info

    machine = machine_info()
    results = {}
    for streams in args.streams.split(","):
        with tempfile.TemporaryDirectory(prefix="drifa-ov-cache-") as cache:
            for scenario, where in (("no-cache", "none"), ("cache-cold", cache), ("cache-warm", cache)):
                name = f"streams-{streams}/{scenario}"
                r = run(args.python, args.artifact, args.precision, where, args.samples, args.calls, streams)
                results[name] = r
                print(f"{name:26s} open {r['open_s']:.2f} s  first call {r['first_call_s'] * 1000:.0f} ms  "
                  f"warm {r['warm_call_p50_s'] * 1000:.0f} ms  first/warm {r['first_over_warm']:.2f}  "
                  f"peak RSS {r['peak_rss_mb']:.0f} MB  torch {r['torch_loaded']} nncf {r['nncf_loaded']}",
                  flush=True)  # fmt: skip
    cli = {}
    for streams in args.streams.split(","):
        with tempfile.TemporaryDirectory(prefix="drifa-ov-cache-") as cache:
            for scenario, where in (("no-cache", "none"), ("cache-cold", cache), ("cache-warm", cache)):
                name = f"streams-{streams}/{scenario}"
                cli[name] = run_cli(args.python, args.artifact, args.precision, where, streams, args.samples)
                print(f"drifa-edge predict {name:26s} peak RSS {cli[name]['peak_rss_mb']:.0f} MB  "
                      f"wall {cli[name]['wall_s']:.2f} s", flush=True)  # fmt: skip
    env_packages = subprocess.run(
        [args.python, "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True
    ).stdout.split()
    out = {
        "benchmark": "cold_start_memory",
        "command": "python " + " ".join(sys.argv),
        "machine": machine,
        "settings": {
            "artifact": str(args.artifact),
            "precision": args.precision,
            "samples": args.samples,
            "warm_calls": args.calls,
            "python": args.python,
        },  # fmt: skip
        "environment": {
            "torch_installed": any(x.lower().startswith("torch==") for x in env_packages),
            "nncf_installed": any(x.lower().startswith("nncf==") for x in env_packages),
            "packages": env_packages,
        },  # fmt: skip
        "results": results,
        "predict_cli": cli,
    }
    if args.out:
        args.out.write_text(json.dumps(out, indent=2))
        print(f"written {args.out}")


if __name__ == "__main__":
    main()
