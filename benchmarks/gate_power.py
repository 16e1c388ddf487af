"""Operating characteristics of the drift gate: false alarms, power, INT8 pass rates.

The gate's verdict on one build is random (MC draws), so it is measured over many
draws. Inference is done once; the gate is then evaluated offline on resampled draws:

1. collect (cached in ``--cache``): R MC runs (T = 30, test split) of each source,
   stored as probabilities: OpenVINO FP32 (the reference pool), PyTorch FP32, ONNX
   Runtime FP32, and each shipped INT8 variant on OpenVINO. A case's draws are iid
   given the image, so any T of a source's R x T draws of a case form one more run;
2. evaluate: each evaluation draws a reference run (T draws per case) and a
   candidate run (T other draws, disjoint from the reference's where both come from
   one pool), optionally distorted, and runs the gate's noise model and decision
   rules on them:
   - null: OpenVINO FP32 against OpenVINO FP32 (other draws), and ONNX Runtime /
     OpenVINO FP32 against PyTorch FP32: every failure is a false alarm;
   - power: the candidate's log-probabilities divided by 1.02 / 1.05 / 1.1 / 1.25 / 1.5
     (temperature), or a fixed Gaussian perturbation per case and class of 0.1 / 0.25 /
     0.5 / 1x the MC noise (the median per-case std of centred log-probabilities),
     at the full test set and at half of it;
   - INT8: each shipped variant's own draws;
3. decision rules on the same evidence: ``material`` (default policy),
   ``equivalence`` (strict-clinical), ``difference``; and for comparison a second
   noise design, K = 3 reference re-runs with a t-test of the candidate's statistic
   against the three reference-pair values (Holm over the same family).

    python benchmarks/gate_power.py --checkpoint /work/runs/real-small-v2
    python benchmarks/gate_power.py --checkpoint ... --sections power   # the stored runs are reused

Writes ``benchmarks/results/gate_power.json`` (pass rates with Wilson 95 % intervals).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent))

from drifa_edge.drift.criteria import CriterionTest, criterion_tests, judge  # noqa: E402
from drifa_edge.drift.noise import permutation_null  # noqa: E402
from drifa_edge.drift.policy import DriftPolicy, load_policy  # noqa: E402
from drifa_edge.drift.stats import holm  # noqa: E402

log = logging.getLogger("gate_power")
T = 30
NNCF_LIKE = {"bias_correction": "fast", "range_estimator": "mean-minmax", "quantize_prefix": True}
INT8_VARIANTS = {
    "int8-default": ("QuantizeConfig() as shipped", {}),
    "int8-conv-matmul": ("as shipped, scope conv-matmul", {"scope": "conv-matmul"}),
    "int8-nncf-defaults": (
        "everything quantizable, NNCF's range/bias settings",
        {"scope": "all", **NNCF_LIKE},
    ),
}


# --------------------------------------------------------------------------- 1. collect


def collect(args) -> Path:
    """Run every source R times and store the probabilities (float32) in one npz."""
    import int8_levers as L
    import openvino as ov

    from drifa_edge.artifact.card import read_card
    from drifa_edge.drift.check import load_split
    from drifa_edge.inference.engine import EngineConfig, run_mc_logits, softmax
    from drifa_edge.quantize.calibration_set import load_calibration_set
    from drifa_edge.quantize.config import QuantizeConfig
    from drifa_edge.runtimes.base import RuntimeOptions, open_runtime

    card = read_card(args.checkpoint)
    store = (
        args.cache
        / f"runs-{card.files.get('model.safetensors', '')[:12]}-{args.cases}-{args.runs}x{args.other_runs}.npz"
    )
    if store.is_file():
        return store
    data = [f"{t}={(args.data_root or L.SHARED_DATA) / t}" for t in card.task_names]
    export = L.export_model(
        args.checkpoint, args.cache / f"drift-{card.files.get('model.safetensors', '')[:12]}"
    )
    ecard = read_card(export)
    core = ov.Core()
    images, labels, _ = load_split(data, ecard, "test", args.cases)
    arrays: dict[str, np.ndarray] = {f"labels/{t}": y for t, y in labels.items()}

    def record(name: str, run, runs: int) -> None:
        started = time.time()
        out = [run(seed) for seed in range(runs)]
        for t in card.task_names:  # (runs, N, T, C) -> (N, runs * T, C)
            arrays[f"{name}/{t}"] = np.concatenate([o[t] for o in out], axis=1).astype(np.float32)
        log.info("%s: %d runs in %.0f s", name, runs, time.time() - started)

    def engine(rt, c):
        def run(seed):
            z = run_mc_logits([rt], images, EngineConfig(samples=T, seed=1000 + seed))
            return {t: softmax(v, c.temperature_of(t)) for t, v in z.items()}

        return run

    fp32 = L.load_fp32(core, export)
    ov_fp32 = L.IRRuntime(core, ecard, fp32["prefix"], fp32["suffix"], "fp32", "f32", args.threads)
    record("ov-fp32", engine(ov_fp32, ecard), args.runs)
    torch_rt = open_runtime("torch", args.checkpoint, RuntimeOptions(threads=args.threads))
    record("torch-fp32", engine(torch_rt, card), args.other_runs)
    ort_rt = open_runtime("onnxruntime", export, RuntimeOptions(threads=args.threads))
    record("ort-fp32", engine(ort_rt, ecard), args.other_runs)
    calib = load_calibration_set(data, ecard, args.subset, 0, "train")
    for name, (_, overrides) in INT8_VARIANTS.items():
        models, _ = L.cached_int8(
            core, export, ecard, calib, QuantizeConfig(subset=args.subset, **overrides), args.cache
        )
        rt = L.IRRuntime(core, ecard, models["prefix"], models["suffix"], name, "f32", args.threads)
        record(name, engine(rt, ecard), args.other_runs)
    referral = {
        t: (r.threshold if r is not None else None)
        for t, r in ((t, card.referral.get(t)) for t in card.task_names)
    }
    arrays["meta"] = np.array(
        json.dumps({"tasks": card.task_names, "referral": referral, "checkpoint": str(args.checkpoint)})
    )
    np.savez_compressed(store, **arrays)
    return store


# --------------------------------------------------------------------------- 2. resample and distort


def draw_runs(rng, pool: np.ndarray, count: int, disjoint: bool = True) -> list[np.ndarray]:
    """``count`` runs of T draws per case from a pool (N, P, C), disjoint from each other."""
    n, p, _ = pool.shape
    order = np.argsort(rng.random((n, p)), axis=1)
    if disjoint and count * T > p:
        raise ValueError(f"a pool of {p} draws per case cannot give {count} disjoint runs of {T}")
    return [np.take_along_axis(pool, order[:, k * T : (k + 1) * T, None], axis=1) for k in range(count)]


def mc_noise(pool: np.ndarray) -> float:
    """Median over cases of the mean over classes of the std of centred log-probabilities
    (the logits up to a per-draw constant) over the pool's draws."""
    logp = np.log(np.clip(pool.astype(np.float64), 1e-12, 1.0))
    centred = logp - logp.mean(axis=2, keepdims=True)
    return float(np.median(centred.std(axis=1).mean(axis=1)))


def temperature(run: np.ndarray, factor: float) -> np.ndarray:
    """softmax(log p / factor) = softmax(logits / factor): the logits' temperature times ``factor``."""
    z = np.log(np.clip(run.astype(np.float64), 1e-12, 1.0)) / factor
    z -= z.max(axis=2, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=2, keepdims=True)


def perturb(run: np.ndarray, sd: float, rng) -> np.ndarray:
    """A fixed Gaussian error (sd) per case and class on every draw's logits: a systematic shift."""
    z = np.log(np.clip(run.astype(np.float64), 1e-12, 1.0)) + sd * rng.normal(
        size=(run.shape[0], 1, run.shape[2])
    )
    z -= z.max(axis=2, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=2, keepdims=True)


# --------------------------------------------------------------------------- 3. judge


def rerun_design(tests: list[CriterionTest], reruns: list[list[CriterionTest]], alpha: float) -> bool:
    """The K re-runs design: each criterion's observed badness against the K(K-1)/2 values of the
    reference-pair statistics (same criterion), one-sided t-test (df = K' - 1) with a prediction
    interval, Holm over the family. True = passed (the difference test alone)."""
    from scipy.stats import t as student

    p_values = []
    for k, test in enumerate(tests):
        values = np.array([r[k].badness for r in reruns])
        sd = values.std(ddof=1) if values.size > 1 else 0.0
        if sd == 0:
            p_values.append(1.0 if test.badness <= values.mean() else 0.0)
            continue
        score = (test.badness - values.mean()) / (sd * math.sqrt(1 + 1 / values.size))
        p_values.append(float(student.sf(score, df=values.size - 1)))
    return not any(holm(p_values, alpha)[1])


def evaluate(
    ref_runs: dict, cand: dict, labels: dict, thresholds: dict, policies: dict, seed: int, extra_refs=None
):
    """Verdicts of every rule on one (reference, candidate) draw; ``extra_refs`` (K runs per task)
    enables the K re-runs design."""
    tests: list[CriterionTest] = []
    rerun_tests: list[list[CriterionTest]] = []
    base = policies["material"]
    for k, task in enumerate(labels):
        nd = permutation_null(
            ref_runs[task], cand[task], labels[task], thresholds[task], thresholds[task],
            metric=base.referral_metric, bins=base.ece_bins, permutations=base.permutations, seed=seed + 7919 * k,
        )  # fmt: skip
        tests += criterion_tests(task, nd, base)
    out = {}
    for name, policy in policies.items():
        if policy.permutations != base.permutations:
            raise ValueError("every policy of one evaluation must share the permutations")
        # criterion_tests' margins come from each policy
        judged = judge(
            [
                dataclasses.replace(t, margin=m.margin)
                for t, m in zip(tests, _margins(tests, policy), strict=True)
            ],
            policy,
        )
        out[name] = {
            "passed": all(c.passed for c in judged),
            "failures": [f"{c.task}: {c.name}" for c in judged if not c.passed],
        }
    if extra_refs is not None:
        pairs = [(0, 1), (0, 2), (1, 2)]
        for i, j in pairs:
            row = []
            for task in labels:
                nd = permutation_null(
                    extra_refs[i][task],
                    extra_refs[j][task],
                    labels[task],
                    thresholds[task],
                    thresholds[task],
                    permutations=1,
                )
                row += criterion_tests(task, nd, base)
            rerun_tests.append(row)
        out["reruns-k3"] = {"passed": rerun_design(tests, rerun_tests, base.alpha), "failures": []}
    return out


def _margins(tests: list[CriterionTest], policy: DriftPolicy) -> list[CriterionTest]:
    """The same tests with ``policy``'s margins (KL on the log scale)."""
    from drifa_edge.drift.criteria import CRITERIA

    out = []
    for t in tests:
        attr = CRITERIA[t.name][1]
        margin = math.log(policy.kl_ratio_max) if t.name == "kl_ratio" else float(getattr(policy, attr))
        out.append(dataclasses.replace(t, margin=margin))
    return out


def wilson(k: int, n: int, z: float = 1.96) -> list[float]:
    """Wilson score 95 % interval of a binomial proportion k / n."""
    if n == 0:
        return [0.0, 1.0]
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--runs", type=int, default=8, help="OpenVINO FP32 runs (the reference pool)")
    p.add_argument("--other-runs", type=int, default=3, help="runs of every other source")
    p.add_argument("--null-draws", type=int, default=150, help="evaluations of each FP32 null")
    p.add_argument("--draws", type=int, default=40, help="evaluations of each distortion and INT8 variant")
    p.add_argument("--subset", type=int, default=64, help="calibration cases of the INT8 builds")
    p.add_argument("--cases", type=int, default=400, help="test cases per task (at most)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--data-root", type=Path, default=None, help="folder of the shared data sets (default ../shared/data)"
    )
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "drifa-gate-power")
    p.add_argument("--collect-only", action="store_true", help="store the runs and stop")
    p.add_argument("--sections", default="null,power,int8", help="which cells to evaluate (comma-separated)")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "gate_power.json")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    started = time.time()
    args.cache.mkdir(parents=True, exist_ok=True)
    store = collect(args)
    if args.collect_only:
        print(store)
        return {}
    sections = set(args.sections.split(","))
    data = np.load(store)
    meta = json.loads(str(data["meta"]))
    tasks = meta["tasks"]
    pools = {name.split("/")[0] for name in data.files if "/" in name and not name.startswith("labels/")}
    pool = {s: {t: data[f"{s}/{t}"] for t in tasks} for s in pools}
    all_labels = {t: data[f"labels/{t}"] for t in tasks}
    scored = {t: all_labels[t] >= 0 for t in tasks}
    policies = {
        "material": DriftPolicy(),
        "equivalence": dataclasses.replace(
            load_policy("strict-clinical"), permutations=DriftPolicy().permutations
        ),
        "difference": dataclasses.replace(DriftPolicy(), decision="difference"),
    }
    noise = {t: mc_noise(pool["ov-fp32"][t][scored[t]]) for t in tasks}
    rng = np.random.default_rng(0)

    def thresholds_of(ref):  # the card's, else the reference run's 90th MI percentile
        from drifa_edge.metrics.uncertainty import summarize

        out = {}
        for t in tasks:
            given = meta["referral"].get(t)
            out[t] = (
                given
                if given is not None
                else float(np.quantile(summarize(ref[t])["mutual_information"], 0.9))
            )
        return out

    def run_cell(name: str, draws: int, make, fraction: float = 1.0, reruns: bool = False) -> dict:
        verdicts: dict[str, list[dict]] = {}
        t0 = time.time()
        for d in range(draws):
            keep = {t: np.flatnonzero(scored[t]) for t in tasks}
            if fraction < 1.0:
                keep = {
                    t: np.sort(rng.choice(k, max(10, int(len(k) * fraction)), replace=False))
                    for t, k in keep.items()
                }
            ref, cand, extra = make(keep)
            labels = {t: all_labels[t][keep[t]] for t in tasks}
            result = evaluate(
                ref, cand, labels, thresholds_of(ref), policies, seed=d, extra_refs=extra if reruns else None
            )
            for rule, v in result.items():
                verdicts.setdefault(rule, []).append(v)
        cell = {"draws": draws, "cases": {t: int(len(keep[t])) for t in tasks}, "rules": {}}
        for rule, vs in verdicts.items():
            passed = sum(v["passed"] for v in vs)
            failures: dict[str, int] = {}
            for v in vs:
                for f in v["failures"]:
                    failures[f] = failures.get(f, 0) + 1
            cell["rules"][rule] = {
                "pass_rate": round(passed / draws, 4),
                "fail_rate_ci95": wilson(draws - passed, draws),
                "failures": failures,
            }
        log.info(
            "%s (%.0f%% cases): %s in %.0f s",
            name,
            100 * fraction,
            {r: v["pass_rate"] for r, v in cell["rules"].items()},
            time.time() - t0,
        )
        return cell

    def fp32_against(source: str, distort=None):
        def make(keep):
            ref_pool = pool["torch-fp32" if source in ("ort-fp32", "ov-fp32-vs-torch") else "ov-fp32"]
            if source == "ov-fp32":  # reference, 3 re-runs for the K design, candidate: disjoint draws
                picked = {t: draw_runs(rng, ref_pool[t][keep[t]], 5) for t in tasks}
                ref = {t: picked[t][0] for t in tasks}
                cand = {t: picked[t][4] for t in tasks}
                extra = [{t: picked[t][k] for t in tasks} for k in (0, 1, 2)]
            else:
                cand_pool = pool["ov-fp32" if source == "ov-fp32-vs-torch" else source]
                ref = {t: draw_runs(rng, ref_pool[t][keep[t]], 1)[0] for t in tasks}
                cand = {t: draw_runs(rng, cand_pool[t][keep[t]], 1)[0] for t in tasks}
                extra = None
            if distort is not None:
                cand = {t: distort(cand[t], t) for t in tasks}
            return ref, cand, extra

        return make

    result: dict = {
        "command": "python benchmarks/gate_power.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "checkpoint": meta["checkpoint"],
        "cases": {t: int(scored[t].sum()) for t in tasks},
        "T": T,
        "pool_draws_per_case": {s: int(pool[s][tasks[0]].shape[1]) for s in sorted(pools)},
        "mc_noise_logit_sd": {t: round(v, 4) for t, v in noise.items()},
        "policies": {k: v.to_dict() for k, v in policies.items()},
        "null": {},
        "power": {},
        "int8": {},
    }
    if "null" in sections:
        result["null"]["ov-fp32 vs ov-fp32 (other draws)"] = run_cell(
            "null ov", args.null_draws, fp32_against("ov-fp32"), reruns=True
        )
        result["null"]["ort-fp32 vs torch-fp32"] = run_cell("null ort", args.draws, fp32_against("ort-fp32"))
        result["null"]["ov-fp32 vs torch-fp32"] = run_cell(
            "null ov-torch", args.draws, fp32_against("ov-fp32-vs-torch")
        )
    for fraction in (1.0, 0.5) if "power" in sections else ():
        for factor in (1.02, 1.05, 1.1, 1.25, 1.5):
            key = f"temperature x{factor} ({fraction:.0%} of cases)"
            result["power"][key] = run_cell(
                key,
                args.draws,
                fp32_against("ov-fp32", lambda r, t, f=factor: temperature(r, f)),
                fraction,
                reruns=True,
            )
        for scale in (0.1, 0.25, 0.5, 1.0):
            key = f"logit noise {scale}x MC noise ({fraction:.0%} of cases)"
            result["power"][key] = run_cell(
                key,
                args.draws,
                fp32_against("ov-fp32", lambda r, t, s=scale: perturb(r, s * noise[t], rng)),
                fraction,
                reruns=True,
            )
    for name, (what, _) in INT8_VARIANTS.items():
        if name not in pools or "int8" not in sections:
            continue

        def make(keep, name=name):
            ref = {t: draw_runs(rng, pool["ov-fp32"][t][keep[t]], 1)[0] for t in tasks}
            cand = {t: draw_runs(rng, pool[name][t][keep[t]], 1)[0] for t in tasks}
            return ref, cand, None

        result["int8"][name] = {"what": what, **run_cell(name, args.draws, make)}
    result["seconds"] = round(time.time() - started, 1)
    result["machine"] = {"cpus": os.cpu_count(), "loadavg_end": os.getloadavg()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(table(result))
    return result


def table(result: dict) -> str:
    """The README's markdown table: pass rate of each cell under each rule."""
    rules = ("material", "equivalence", "difference", "reruns-k3")
    lines = ["| comparison | draws | " + " | ".join(rules) + " |", "|---|---|" + "---|" * len(rules)]
    for section in ("null", "power", "int8"):
        for name, cell in result[section].items():
            rates = [f"{cell['rules'][r]['pass_rate']:.3f}" if r in cell["rules"] else "-" for r in rules]
            lines.append(f"| {section}: {name} | {cell['draws']} | " + " | ".join(rates) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
