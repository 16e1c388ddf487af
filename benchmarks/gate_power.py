"""How often the drift gate passes a build: false alarms (FP32 against FP32) and power.

The gate judges a candidate against the noise floor measured in the same run, so its
verdict on one build is itself random: another set of MC masks may flip a borderline
case. This script measures the pass rate over many independent draws instead of one:

1. R independent MC runs (T = 30, test split) of each variant on OpenVINO: FP32, the
   shipped INT8 default (``QuantizeConfig()``), the previous default (Conv inputs on
   feature maps only, NNCF's mean-minmax ranges and fast bias correction, prefix
   quantized), the shipped default with scope conv-matmul, and NNCF's own defaults (everything quantizable, same settings);
2. N triplets (reference, reference again, candidate) drawn from those runs, the first
   two always FP32 and distinct; for the FP32 variant the candidate is a third FP32 run,
   so its failures are the gate's false-alarm rate;
3. ``drifa_edge.drift.gate.evaluate_drift`` with the default policy on each triplet.

    python benchmarks/gate_power.py          # writes benchmarks/results/gate_power.json

Needs the real-data checkpoint (``runs/real-small``, see train/real-small.toml) and
../shared/data; about 15 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent))

import int8_levers as L  # noqa: E402  (IRRuntime, cached_int8, probabilities, with_thresholds)

from drifa_edge.drift.gate import evaluate_drift  # noqa: E402
from drifa_edge.drift.policy import DriftPolicy  # noqa: E402
from drifa_edge.quantize.config import QuantizeConfig  # noqa: E402

log = logging.getLogger("gate_power")

NNCF_LIKE = {"bias_correction": "fast", "range_estimator": "mean-minmax", "quantize_prefix": True}
VARIANTS = {
    "fp32": ("FP32 against FP32 (false alarms)", None),
    "int8-default": ("QuantizeConfig() as shipped: scope all, min/max, no bias correction, prefix FP32", {}),
    "int8-conv-matmul": (
        "as shipped but scope conv-matmul (pooling, gates, adds float)",
        {"scope": "conv-matmul"},
    ),
    "int8-previous-default": (
        "attention-fp32 with NNCF's range/bias settings, prefix INT8",
        {"scope": "attention-fp32", **NNCF_LIKE},
    ),
    "int8-nncf-defaults": (
        "everything quantizable, NNCF's range/bias settings, prefix INT8",
        {"scope": "all", **NNCF_LIKE},
    ),
}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, default=L.DEFAULT_CHECKPOINT)
    p.add_argument("--runs", type=int, default=10, help="independent MC runs per variant")
    p.add_argument("--triplets", type=int, default=60, help="gate evaluations per variant")
    p.add_argument("--subset", type=int, default=64, help="calibration cases of the INT8 builds")
    p.add_argument("--cases", type=int, default=400, help="test cases per task (at most)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "drifa-int8-levers")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "gate_power.json")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import openvino as ov

    from drifa_edge.artifact.card import read_card
    from drifa_edge.drift.check import load_split
    from drifa_edge.quantize.calibration_set import load_calibration_set

    started = time.time()
    card = read_card(args.checkpoint)
    data = [f"{t}={L.SHARED_DATA / t}" for t in card.task_names]
    args.cache.mkdir(parents=True, exist_ok=True)
    export = L.export_model(
        args.checkpoint, args.cache / f"drift-{card.files.get('model.safetensors', '')[:12]}"
    )
    ecard = read_card(export)
    core = ov.Core()
    images, labels, _ = load_split(data, ecard, "test", args.cases)
    calib = load_calibration_set(data, ecard, args.subset, 0, "train")
    fp32 = L.load_fp32(core, export)
    runs: dict[str, list[dict]] = {}
    for name, (_, overrides) in VARIANTS.items():
        if overrides is None:
            models = fp32
        else:
            models, _ = L.cached_int8(
                core, export, ecard, calib, QuantizeConfig(subset=args.subset, **overrides), args.cache
            )
        rt = L.IRRuntime(core, ecard, models["prefix"], models["suffix"], name, "f32", args.threads)
        t = time.time()
        runs[name] = [L.probabilities(rt, images, ecard) for _ in range(args.runs)]
        log.info("%s: %d runs in %.0f s", name, args.runs, time.time() - t)

    policy = DriftPolicy()
    ref_runs = runs["fp32"]
    pairs = [(i, j) for i in range(args.runs) for j in range(args.runs) if i != j]
    result: dict = {
        "command": "python benchmarks/gate_power.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "checkpoint": str(args.checkpoint),
        "cases": {t: int((v >= 0).sum()) for t, v in labels.items()},  # scored (-1: no case of that task)
        "T": L.T,
        "runs_per_variant": args.runs,
        "policy": policy.to_dict(),
        "variants": {},
    }
    for name, (what, _) in VARIANTS.items():
        rng = random.Random(0)
        chosen = rng.sample(pairs, min(args.triplets, len(pairs)))
        passed, fails, kl = 0, collections.Counter(), collections.defaultdict(list)
        for i, j in chosen:
            k = rng.choice([k for k in range(args.runs) if name != "fp32" or k not in (i, j)])
            # referral thresholds: the card's, else fitted on this triplet's reference
            rcard = L.with_thresholds(ecard, ref_runs[i])
            report = evaluate_drift(ref_runs[i], ref_runs[j], runs[name][k], labels, rcard, rcard, policy)
            passed += report.passed
            fails.update(f"{c.task}: {c.name}" for c in report.failures)
            for c in report.criteria:
                if c.name == "kl_ratio":
                    kl[c.task].append(c.value)
        n = len(chosen)
        result["variants"][name] = {
            "what": what,
            "evaluations": n,
            "passed": passed,
            "pass_rate": round(passed / n, 3),
            "failures": dict(fails.most_common()),
            "kl_ratio_median": {t: round(float(sorted(v)[len(v) // 2]), 3) for t, v in kl.items()},
        }
        log.info("%s: passed %d / %d; %s", name, passed, n, dict(fails.most_common(4)))
    result["seconds"] = round(time.time() - started, 1)
    result["machine"] = {"cpus": os.cpu_count(), "loadavg_end": os.getloadavg()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps({n: f"{v['passed']}/{v['evaluations']}" for n, v in result["variants"].items()}))
    return result


if __name__ == "__main__":
    main()
