#!/usr/bin/env bash
# One-shot GPU check for drifa-edge (at most ~4 minutes, no network once the Python packages
# are installed). Every row runs in its own process with a timeout and records ok / failed /
# skipped with the reason, so a machine with PyTorch + onnxruntime but no TensorRT (or no
# GPU at all) still gets every row it can run. Results: one JSON file.
#
#   benchmarks/gpu_check.sh [OUT_JSON]        (default benchmarks/results/gpu_check.json)
#   BUDGET_S=240 PYTHON=python3 benchmarks/gpu_check.sh
#   LIMIT_SCALE=3 BUDGET_S=600 ...   (a slow or shared machine: every row limit x3)
#
# Rows: env (driver, CUDA, torch, onnxruntime providers, TensorRT import) -> a tiny model
# with random weights (CPU) -> ONNX export -> onnxruntime CPU (the reference against itself:
# checks the checks, gives a CPU timing) -> torch CUDA runtime ->
# onnxruntime CUDA EP -> onnxruntime TensorRT EP -> TensorRT engines fp32 / fp16 / int8
# (each: prefix parity vs onnxruntime CPU, MC masks differ between rows and calls, MC
# mean/std vs onnxruntime CPU) -> the drift gate on the fp16 and int8 engines -> a bench
# table of every CUDA row. MC checks use 200 samples.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_JSON="${1:-benchmarks/results/gpu_check.json}"
PY="${PYTHON:-python}"
BUDGET_S="${BUDGET_S:-240}"
LIMIT_SCALE="${LIMIT_SCALE:-1}"
WORK="$(mktemp -d -t drifa-gpu-check-XXXXXX)"
ROWS="$WORK/rows.jsonl"
START=$(date +%s)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" DRIFA_GPU_CHECK_WORK="$WORK"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$(dirname "$OUT_JSON")"

# row NAME TIMEOUT_S: run rows.py NAME; append its JSON line (or a failure line) to $ROWS.
row() {
  local name="$1" limit=$(($2 * LIMIT_SCALE)) left
  left=$((BUDGET_S - ($(date +%s) - START) - 5))
  if ((left < 10)); then
    printf '{"row": "%s", "status": "skipped", "reason": "time budget (%ss) spent"}\n' "$name" "$BUDGET_S" >>"$ROWS"
    return
  fi
  ((limit > left)) && limit=$left
  local t0=$(date +%s) out rc
  out=$(timeout "$limit" "$PY" "$WORK/rows.py" "$name" 2>"$WORK/$name.err")
  rc=$?
  if [[ $rc -eq 0 && -n "$out" ]]; then
    echo "$out" | tail -1 >>"$ROWS"
  else
    local why="exit $rc"
    ((rc == 124)) && why="timed out after ${limit}s"
    "$PY" - "$name" "$why" "$WORK/$name.err" "$(( $(date +%s) - t0 ))" >>"$ROWS" <<'EOF'
import json, sys
name, why, err, secs = sys.argv[1:]
tail = open(err, errors="replace").read().strip().splitlines()[-3:]
print(json.dumps({"row": name, "status": "failed", "reason": why, "stderr_tail": tail, "seconds": int(secs)}))
EOF
  fi
  echo "[gpu_check] $name: $(tail -1 "$ROWS" | cut -c1-160)" >&2
}

cat >"$WORK/rows.py" <<'EOF'
"""The rows of benchmarks/gpu_check.sh; each prints one JSON line."""
import json, os, subprocess, sys, time
from pathlib import Path

import numpy as np

WORK = Path(os.environ["DRIFA_GPU_CHECK_WORK"])
CKPT, EXPORT = WORK / "ckpt", WORK / "export"
SAMPLES = 200  # MC samples of the consistency checks (the export check's minimum)


def emit(row, status="ok", **kw):
    print(json.dumps({"row": row, "status": status, **kw}, default=str))


def skip(row, reason):
    emit(row, "skipped", reason=reason)
    sys.exit(0)


def need_export(row):
    if not (EXPORT / "model_card.json").is_file():
        skip(row, "no ONNX export (see the export row)")


def cuda_ok():
    try:
        import torch
        return torch.cuda.is_available()
    except Exception:
        return False


def drifa(*args, timeout=200):
    cli = "import sys; from drifa_edge.cli import main; sys.argv[0] = 'drifa-edge'; main()"
    return subprocess.run([sys.executable, "-c", cli, *args], capture_output=True, text=True, timeout=timeout)


def checks_against_cpu(runtime, label):
    """Prefix parity, MC stochasticity and MC mean/std of ``runtime`` vs onnxruntime CPU FP32."""
    from drifa_edge.export import checks
    from drifa_edge.runtimes.base import RuntimeOptions, open_runtime

    ref = open_runtime("onnxruntime", EXPORT, RuntimeOptions(device="cpu"))
    try:
        images = checks.random_images(ref, 4, 0)
        rf, cf = ref.run_prefix(images), runtime.run_prefix(images)
        scale = max(float(np.abs(f).max()) for f in rf) or 1.0
        parity = max(float(np.abs(a - b).max()) for a, b in zip(cf, rf)) / scale
        stoch = checks.check_stochastic(runtime, images)
        mc = checks.check_mc_consistency(ref, runtime, images, checks.CheckConfig(samples=SAMPLES))
        t = time.perf_counter()
        for _ in range(3):
            runtime.run_suffix([np.repeat(f[:1], 240, axis=0) for f in cf])
        ms = (time.perf_counter() - t) / 3 * 1e3
    finally:
        ref.close()
    return {
        "prefix_rel_diff": parity,
        "mc_stochastic": stoch.passed, "mc_stochastic_details": stoch.details,
        "mc_consistency_passed": mc.passed, "mc_consistency_worst_ratio": mc.value,
        "suffix_ms_240_rows": round(ms, 2), "runtime": label,
    }


def env():
    info = {"python": sys.version.split()[0]}
    try:
        info["nvidia_smi"] = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout.strip()
    except Exception as e:
        info["nvidia_smi"] = f"unavailable: {e}"
    try:
        import torch
        info["torch"] = torch.__version__
        info["torch_cuda"] = torch.version.cuda
        info["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception as e:
        info["torch"] = f"unavailable: {e}"
    try:
        import onnxruntime as ort
        info["onnxruntime"] = ort.__version__
        info["onnxruntime_providers"] = ort.get_available_providers()
    except Exception as e:
        info["onnxruntime"] = f"unavailable: {e}"
    from drifa_edge.export.tensorrt import import_tensorrt
    try:
        info["tensorrt"] = import_tensorrt().__version__
    except Exception as e:
        info["tensorrt"] = f"unavailable: {e}"
    for name in ("modelopt", "onnxconverter_common", "cuda"):
        try:
            info[name] = getattr(__import__(name), "__version__", "present")
        except Exception as e:
            info[name] = f"unavailable: {type(e).__name__}"
    emit("env", **info)


def model():
    """A tiny DRIFA-Net with random weights (2 tasks, 32 px, width 0.125; seed 0): no training,
    so the row takes seconds; the drift gate then compares engines with this same model."""
    import torch

    from drifa_edge.artifact.card import default_card
    from drifa_edge.model.config import ModelConfig, TaskSpec
    from drifa_edge.model.drifa import build_model
    from drifa_edge.artifact.checkpoint import save_checkpoint

    cfg = ModelConfig(
        tasks=(TaskSpec("derm", ("nevus", "melanoma", "other")), TaskSpec("xray", ("normal", "pneumonia"), 1)),
        image_size=32,
        width=0.125,
    )
    torch.manual_seed(0)
    save_checkpoint(build_model(cfg).eval(), default_card(cfg), CKPT)
    emit("model", checkpoint=str(CKPT), config="2 tasks, 32 px, width 0.125, random weights (seed 0)")


def export():
    if not (CKPT / "model_card.json").is_file() and not any(CKPT.glob("*/model_card.json")):
        skip("export", "no checkpoint (see the model row)")
    run = drifa("export", str(CKPT), "--out", str(EXPORT), "--onnx", "--no-check")
    if run.returncode != 0:
        emit("export", "failed", reason=run.stderr.strip().splitlines()[-1:])
        return
    emit("export", files=sorted(str(p.relative_to(EXPORT)) for p in EXPORT.rglob("*.onnx")))


def torch_cuda():
    need_export("torch_cuda")
    if not cuda_ok():
        skip("torch_cuda", "PyTorch has no CUDA device")
    from drifa_edge.runtimes.base import RuntimeOptions, open_runtime
    rt = open_runtime("torch", CKPT, RuntimeOptions(device="cuda:0"))
    try:
        emit("torch_cuda", **checks_against_cpu(rt, "torch cuda:0"))
    finally:
        rt.close()


def ort_device(row, device, provider):
    need_export(row)
    import onnxruntime as ort
    if provider not in ort.get_available_providers():
        skip(row, f"this onnxruntime ({ort.__version__}) has no {provider} (pip install onnxruntime-gpu in its own env)")
    from drifa_edge.runtimes.base import RuntimeOptions, open_runtime
    rt = open_runtime("onnxruntime", EXPORT, RuntimeOptions(device=device))
    try:
        emit(row, **checks_against_cpu(rt, f"onnxruntime {device}"))
    finally:
        rt.close()


def trt(precision):
    row = f"tensorrt_{precision}"
    need_export(row)
    from drifa_edge.errors import MissingDependencyError
    from drifa_edge.export.tensorrt import export_tensorrt, import_tensorrt
    try:
        import_tensorrt()
    except MissingDependencyError as e:
        skip(row, str(e))
    if not cuda_ok():
        skip(row, "no CUDA device")
    calib = None
    if precision == "int8":
        from drifa_edge.artifact.card import read_card
        card = read_card(EXPORT, verify=False)
        rng = np.random.default_rng(0)
        calib = [rng.standard_normal((64, t.channels, card.model.image_size, card.model.image_size), np.float32)
                 for t in card.model.tasks]
    t = time.perf_counter()
    summary = export_tensorrt(EXPORT, "desktop-cuda", precision, calib, subset=64, check=True)
    build_s = time.perf_counter() - t
    from drifa_edge.runtimes.base import RuntimeOptions, open_runtime
    rt = open_runtime("tensorrt", EXPORT, RuntimeOptions(precision=precision, device="cuda:0"))
    try:
        emit(row, build_seconds=round(build_s, 1), path=summary["path"], export_checks=summary.get("checks"),
             **checks_against_cpu(rt, f"tensorrt {precision}"))
    finally:
        rt.close()


def gate(precision):
    row = f"gate_tensorrt_{precision}"
    folder = next(EXPORT.glob(f"tensorrt-*-{precision}/build.json"), None)
    if folder is None:
        skip(row, f"no TensorRT {precision} build (see its row)")
    run = drifa("check", str(CKPT), str(EXPORT), "--data", "synthetic", "--runtime", "tensorrt",
                "--precision", precision, "--device", "cuda:0", "--limit", "64", "--json", timeout=150)
    try:
        report = json.loads(run.stdout)
    except json.JSONDecodeError:
        emit(row, "failed", reason=f"exit {run.returncode}", stderr_tail=run.stderr.strip().splitlines()[-3:])
        return
    emit(row, exit_code=run.returncode, passed=report.get("passed"), report=report)


def bench():
    need_export("bench")
    runtimes = ["onnxruntime"]
    if any(EXPORT.glob("tensorrt-*/build.json")):
        runtimes.append("tensorrt")
    if not cuda_ok():
        skip("bench", "no CUDA device")
    run = drifa("bench", str(EXPORT), "--runtimes", ",".join(runtimes), "--device", "cuda:0", "--checkpoint",
                str(CKPT), "--samples", "30", "--batch", "8", "--repeats", "5", "--budget", "10",
                "--out", str(WORK / "bench"), timeout=150)
    table = WORK / "bench" / "bench.json"
    if run.returncode != 0 or not table.is_file():
        emit("bench", "failed", reason=f"exit {run.returncode}", stderr_tail=run.stderr.strip().splitlines()[-3:])
        return
    emit("bench", table=json.loads(table.read_text()))


ROWS = {
    "env": env, "model": model, "export": export, "torch_cuda": torch_cuda,
    "ort_cpu": lambda: ort_device("ort_cpu", "cpu", "CPUExecutionProvider"),
    "ort_cuda": lambda: ort_device("ort_cuda", "cuda:0", "CUDAExecutionProvider"),
    "ort_tensorrt_ep": lambda: ort_device("ort_tensorrt_ep", "tensorrt:0", "TensorrtExecutionProvider"),
    "tensorrt_fp32": lambda: trt("fp32"), "tensorrt_fp16": lambda: trt("fp16"), "tensorrt_int8": lambda: trt("int8"),
    "gate_tensorrt_fp16": lambda: gate("fp16"), "gate_tensorrt_int8": lambda: gate("int8"), "bench": bench,
}
ROWS[sys.argv[1]]()
EOF

row env 30
row model 40
row export 75
row ort_cpu 30
row torch_cuda 25
row ort_cuda 25
row ort_tensorrt_ep 40
row tensorrt_fp32 45
row tensorrt_fp16 45
row tensorrt_int8 60
row gate_tensorrt_fp16 30
row gate_tensorrt_int8 30
row bench 30

"$PY" - "$ROWS" "$OUT_JSON" "$START" "$BUDGET_S" <<'EOF'
import json, os, platform, sys, time
rows_file, out, start, budget = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
rows = [json.loads(line) for line in open(rows_file) if line.strip()]
result = {
    "command": "benchmarks/gpu_check.sh",
    "machine": {"platform": platform.platform(), "logical_cpus": os.cpu_count()},
    "seconds": round(time.time() - start, 1),
    "budget_seconds": int(budget),
    "summary": {r["row"]: r["status"] for r in rows},
    "rows": rows,
}
open(out, "w").write(json.dumps(result, indent=2, default=str) + "\n")
print(json.dumps(result["summary"], indent=1))
EOF
