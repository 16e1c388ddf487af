"""Operating characteristics of the drift gate: false alarms, power, INT8 pass rates.

The gate's verdict on one build is random (MC draws), so it is measured over many
draws. Inference is done once; the gate is then evaluated offline on resampled draws:

1. collect (cached in ``--cache``, one npz per source, kept as soon as it is done): R MC
   runs (T = 30, test split) of each source, stored as probabilities and every draw's
   pooled embedding (for the OOD criteria): OpenVINO FP32 (the reference pool), PyTorch
   FP32, ONNX Runtime FP32, the export's shipped INT8 builds (OpenVINO, ONNX Runtime)
   and INT8 variants built here (``--int8-scope conv-matmul``, NNCF's defaults). A
   case's draws are iid given the image, so any T of a source's R x T draws of a case
   form one more run;
2. evaluate: each evaluation draws a reference run (T draws per case) and a candidate
   run (T other draws, disjoint from the reference's where both come from one pool),
   optionally distorted, and runs the gate's noise model and decision rules on them,
   with the OOD criteria where the checkpoint (or ``--ood``) has ``ood.npz``:
   - null: OpenVINO FP32 against OpenVINO FP32 (other draws), and ONNX Runtime /
     OpenVINO FP32 against PyTorch FP32: every failure is a false alarm;
   - power: the candidate's log-probabilities divided by 1.05 / 1.1 / 1.25 / 1.5
     (temperature), or a fixed Gaussian perturbation per case and class of 0.1 / 0.25 /
     0.5 / 1x the MC noise (the median per-case std of centred log-probabilities);
     ``--fractions 1.0,0.5`` adds the same at half the test set;
   - INT8: each variant's own draws (NNCF's defaults being the known-bad build);
3. decision rules on the same evidence: ``material`` (default policy),
   ``equivalence`` (strict-clinical), ``difference``; and for comparison a second
   noise design, K = 3 reference re-runs with a t-test of the candidate's statistic
   against the three reference-pair values (Holm over the same family).

    OPENBLAS_NUM_THREADS=1 nice -n 10 python benchmarks/gate_power.py --checkpoint CKPT \
        --export EXPORT --runs 5 --other-runs 2 --threads 1 --data-root ../shared/data
    python benchmarks/gate_power.py ... --sections power   # the stored runs are reused

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

from drifa_edge.artifact.ood import read_ood  # noqa: E402
from drifa_edge.drift.criteria import CriterionTest, criterion_tests, judge  # noqa: E402
from drifa_edge.drift.noise import permutation_null  # noqa: E402
from drifa_edge.drift.policy import DriftPolicy, load_policy  # noqa: E402
from drifa_edge.drift.stats import holm  # noqa: E402

log = logging.getLogger("gate_power")
T = 30
NNCF_LIKE = {"bias_correction": "fast", "range_estimator": "mean-minmax", "quantize_prefix": True}
# name -> (what, QuantizeConfig overrides of a build made here; None: the export's own build)
INT8_VARIANTS = {
    "int8-ort": ("the export's shipped ONNX Runtime INT8 build (static QDQ)", None),
    "int8-default": ("the export's shipped OpenVINO INT8 build (QuantizeConfig() defaults)", {}),
    "int8-conv-matmul": ("as shipped, scope conv-matmul", {"scope": "conv-matmul"}),
    "int8-nncf-defaults": (
        "everything quantizable, NNCF's range/bias settings",
        {"scope": "all", **NNCF_LIKE},
    ),
}


# --------------------------------------------------------------------------- 1. collect


SOURCES = (
    "ov-fp32",
    "torch-fp32",
    "int8-default",
    "ort-fp32",
    *[n for n in INT8_VARIANTS if n != "int8-default"],
)


def runs_folder(args) -> Path:
    """Where the runs of ``--checkpoint`` on ``--cases`` test cases are stored."""
    from drifa_edge.artifact.card import read_card

    weights = read_card(args.checkpoint).files.get("model.safetensors", "")[:12]
    return args.cache / f"runs-{weights}-{args.cases}"


def collect(args) -> Path:
    """Run every source R times; store each source's probabilities and per-draw pooled
    embeddings (float32, for the OOD criteria) in its own npz as soon as it is done, so an
    interrupted collection keeps what it measured. Returns the folder."""
    import int8_levers as L
    import openvino as ov

    from drifa_edge.artifact.card import read_card
    from drifa_edge.drift.check import load_split
    from drifa_edge.inference.engine import EngineConfig, run_member_embedding_draws, softmax
    from drifa_edge.quantize.calibration_set import load_calibration_set
    from drifa_edge.quantize.config import QuantizeConfig
    from drifa_edge.runtimes.base import RuntimeOptions, open_runtime

    card = read_card(args.checkpoint)
    weights = card.files.get("model.safetensors", "")[:12]
    folder = runs_folder(args)
    folder.mkdir(parents=True, exist_ok=True)
    data = [f"{t}={(args.data_root or L.SHARED_DATA) / t}" for t in card.task_names]
    export = args.export or L.export_model(args.checkpoint, args.cache / f"drift-{weights}")
    ecard = read_card(export)
    images, labels, _ = load_split(data, ecard, "test", args.cases)
    referral = {
        t: (r.threshold if (r := card.referral.get(t)) is not None else None) for t in card.task_names
    }
    meta = {
        "tasks": card.task_names,
        "referral": referral,
        "checkpoint": str(args.checkpoint),
        "export": str(export),
    }
    np.savez(
        folder / "labels.npz",
        meta=np.array(json.dumps(meta)),
        **{f"labels/{t}": y for t, y in labels.items()},
    )
    opts = RuntimeOptions(threads=args.threads)

    def record(name: str, open_rt, runs: int) -> None:
        path = folder / f"{name}.npz"
        if path.is_file():
            return
        started, probs, embs = time.time(), [], []
        rt = open_rt()
        for seed in range(runs):
            cfg = EngineConfig(samples=T, seed=1000 + seed)
            logits, emb = run_member_embedding_draws(rt, images, cfg)  # (N, T, C) per task, (N, T, E)
            c = rt.card
            probs.append(
                {t: softmax(z, c.temperature_of(t)) for t, z in zip(c.task_names, logits, strict=True)}
            )
            embs.append(emb)
        rt.close()
        arrays = {
            t: np.concatenate([o[t] for o in probs], axis=1).astype(np.float32) for t in card.task_names
        }
        arrays["embedding"] = np.concatenate(embs, axis=1).astype(np.float32)  # (N, runs * T, E)
        np.savez(folder / f"{name}.tmp.npz", **arrays)
        (folder / f"{name}.tmp.npz").replace(path)
        log.info("%s: %d runs in %.0f s", name, runs, time.time() - started)

    def built(name: str, overrides: dict):
        core = ov.Core()
        calib = load_calibration_set(data, ecard, args.subset, 0, "train")
        config = QuantizeConfig(subset=args.subset, **overrides)
        models, _ = L.cached_int8(core, export, ecard, calib, config, args.cache)
        return L.IRRuntime(core, ecard, models["prefix"], models["suffix"], name, "f32", args.threads)

    shipped = dataclasses.replace(opts, precision="int8")
    openers = {
        "ov-fp32": (lambda: open_runtime("openvino", export, opts), args.runs),
        "torch-fp32": (lambda: open_runtime("torch", args.checkpoint, opts), args.other_runs),
        "ort-fp32": (lambda: open_runtime("onnxruntime", export, opts), args.other_runs),
        "int8-default": (lambda: open_runtime("openvino", export, shipped), args.other_runs),
        "int8-ort": (lambda: open_runtime("onnxruntime", export, shipped), args.other_runs),
    }
    for name, (_, overrides) in INT8_VARIANTS.items():
        if overrides is not None and name not in openers:
            openers[name] = (lambda n=name, o=overrides: built(n, o), args.other_runs)
    for name in args.sources.split(","):
        if name not in openers:
            raise SystemExit(f"unknown source {name!r}; known: {sorted(openers)}")
        record(name, *openers[name])
    return folder


def load_runs(folder: Path) -> tuple[dict, dict, dict, dict]:
    """(meta, labels {task: (N,)}, probabilities {source: {task: (N, P, C)}}, embeddings {source: (N, P, E)})."""
    with np.load(folder / "labels.npz") as z:
        meta = json.loads(str(z["meta"]))
        labels = {t: z[f"labels/{t}"] for t in meta["tasks"]}
    pool, embs = {}, {}
    for path in sorted(folder.glob("*.npz")):
        if path.name == "labels.npz" or path.name.endswith(".tmp.npz"):
            continue
        with np.load(path) as z:
            pool[path.stem] = {t: z[t] for t in meta["tasks"]}
            if "embedding" in z.files:
                embs[path.stem] = z["embedding"]
    return meta, labels, pool, embs


# --------------------------------------------------------------------------- 2. resample and distort


def draw_runs(rng, probs: np.ndarray, emb: np.ndarray | None, rows: np.ndarray, count: int) -> list[tuple]:
    """``count`` runs of T draws per case, disjoint from each other, from one source's pool:
    ``probs`` (N, P, C) of a task and ``emb`` (N, P, E) (every task's rows; None: not
    stored), of the cases ``rows``. A run is (probs (n, T, C), embedding (n, T, E) or None):
    the same draws of both, as one run of the model gives them."""
    p = probs.shape[1]
    if count * T > p:
        raise ValueError(f"a pool of {p} draws per case cannot give {count} disjoint runs of {T}")
    order = np.argsort(rng.random((len(rows), p)), axis=1)
    out = []
    for k in range(count):
        idx = order[:, k * T : (k + 1) * T]  # (n, T)
        out.append((probs[rows[:, None], idx], None if emb is None else emb[rows[:, None], idx]))
    return out


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


def _tests(ref: dict, cand: dict, labels, thresholds, densities, policy, permutations, seed) -> list:
    """Every criterion's evidence over the tasks; runs are {task: (probs, embedding)}."""
    from drifa_edge.drift.noise import OodFeatures

    tests: list[CriterionTest] = []
    for k, task in enumerate(labels):
        (p_ref, e_ref), (p_cand, e_cand) = ref[task], cand[task]
        ood = None
        if densities and task in densities and e_ref is not None and e_cand is not None:
            ood = OodFeatures(e_ref, e_cand, densities[task], densities[task])
        nd = permutation_null(
            p_ref, p_cand, labels[task], thresholds[task], thresholds[task],
            metric=policy.referral_metric, bins=policy.ece_bins, permutations=permutations,
            seed=seed + 7919 * k, ood=ood,
        )  # fmt: skip
        tests += criterion_tests(task, nd, policy)
    return tests


def evaluate(
    ref_runs: dict,
    cand: dict,
    labels: dict,
    thresholds: dict,
    policies: dict,
    seed: int,
    extra_refs=None,
    densities=None,
):
    """Verdicts of every rule on one (reference, candidate) draw; ``extra_refs`` (K runs per task)
    enables the K re-runs design; ``densities`` (ood.npz) the OOD criteria."""
    base = policies["material"]
    tests = _tests(ref_runs, cand, labels, thresholds, densities, base, base.permutations, seed)
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
        rerun_tests = [
            _tests(extra_refs[i], extra_refs[j], labels, thresholds, densities, base, 1, seed)
            for i, j in ((0, 1), (0, 2), (1, 2))
        ]
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
    p.add_argument(
        "--export", type=Path, default=None, help="an export of the checkpoint to use (default: export one)"
    )
    p.add_argument("--runs", type=int, default=8, help="OpenVINO FP32 runs (the reference pool)")
    p.add_argument("--other-runs", type=int, default=3, help="runs of every other source")
    p.add_argument("--null-draws", type=int, default=150, help="evaluations of each FP32 null")
    p.add_argument("--draws", type=int, default=40, help="evaluations of each distortion and INT8 variant")
    p.add_argument("--subset", type=int, default=300, help="calibration cases of the INT8 builds")
    p.add_argument("--cases", type=int, default=400, help="test cases per task (at most)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--data-root", type=Path, default=None, help="folder of the shared data sets (default ../shared/data)"
    )
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "drifa-gate-power")
    p.add_argument(
        "--ood",
        type=Path,
        default=None,
        help="folder whose ood.npz gives the OOD criteria (default: checkpoint)",
    )
    p.add_argument(
        "--fractions", default="1.0", help="shares of the test cases the power cells use (e.g. 1.0,0.5)"
    )
    p.add_argument("--merge", action="store_true", help="keep the cells of an existing --out file")
    p.add_argument("--partial", type=Path, default=None, help="write each finished cell here as it ends")
    p.add_argument(
        "--combine",
        type=Path,
        nargs="+",
        default=None,
        help="merge these result files (parallel runs) into --out",
    )
    p.add_argument(
        "--only", default="", help="run only cells whose name contains one of these (comma-separated)"
    )
    p.add_argument("--collect-only", action="store_true", help="store the runs and stop")
    p.add_argument("--evaluate-only", action="store_true", help="judge the runs stored so far, run nothing")
    p.add_argument(
        "--sources", default=",".join(SOURCES), help="sources to run, in this order (comma-separated)"
    )
    p.add_argument("--sections", default="null,power,int8", help="which cells to evaluate (comma-separated)")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "gate_power.json")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.combine:
        return combine(args.combine, args.out)
    started = time.time()
    args.cache.mkdir(parents=True, exist_ok=True)
    folder = runs_folder(args) if args.evaluate_only else collect(args)
    if args.collect_only:
        print(folder)
        return {}
    sections = set(args.sections.split(","))
    meta, all_labels, pool, embs = load_runs(folder)
    tasks = meta["tasks"]
    pools = set(pool)
    densities = read_ood(args.ood or args.checkpoint)
    if densities is None:
        log.warning("no ood.npz in %s: the OOD criteria are not measured", args.ood or args.checkpoint)
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
                else float(np.quantile(summarize(ref[t][0])["mutual_information"], 0.9))
            )
        return out

    def runs(source: str, t: str, rows: np.ndarray, count: int) -> list[tuple]:
        return draw_runs(rng, pool[source][t], embs.get(source), rows, count)

    def wanted(name: str) -> bool:  # --only: run just the cells whose name contains one of these
        return not args.only or any(part in name for part in args.only.split(","))

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
                ref, cand, labels, thresholds_of(ref), policies, seed=d,
                extra_refs=extra if reruns else None, densities=densities,
            )  # fmt: skip
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
        if args.partial is not None:  # every finished cell on disk at once: a long run can be stopped
            done = json.loads(args.partial.read_text()) if args.partial.is_file() else {}
            done[name] = cell
            args.partial.write_text(json.dumps(done, indent=1))
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
            ref_source = "torch-fp32" if source in ("ort-fp32", "ov-fp32-vs-torch") else "ov-fp32"
            if source == "ov-fp32":  # reference, 3 re-runs for the K design, candidate: disjoint draws
                picked = {t: runs(ref_source, t, keep[t], 5) for t in tasks}
                ref = {t: picked[t][0] for t in tasks}
                cand = {t: picked[t][4] for t in tasks}
                extra = [{t: picked[t][k] for t in tasks} for k in (0, 1, 2)]
            else:
                cand_source = "ov-fp32" if source == "ov-fp32-vs-torch" else source
                ref = {t: runs(ref_source, t, keep[t], 1)[0] for t in tasks}
                cand = {t: runs(cand_source, t, keep[t], 1)[0] for t in tasks}
                extra = None
            if distort is not None:
                cand = {t: (distort(cand[t][0], t), cand[t][1]) for t in tasks}
            return ref, cand, extra

        return make

    result: dict = {
        "command": "python benchmarks/gate_power.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "checkpoint": meta["checkpoint"],
        "cases": {t: int(scored[t].sum()) for t in tasks},
        "T": T,
        "pool_draws_per_case": {s: int(pool[s][tasks[0]].shape[1]) for s in sorted(pools)},
        "mc_noise_logit_sd": {t: round(v, 4) for t, v in noise.items()},
        "ood_criteria": (
            f"judged (spearman_ood, ood_agreement) with {args.ood or args.checkpoint}/ood.npz on the sources "
            f"with stored embeddings: {sorted(embs)}"
            if densities
            else "not judged: no ood.npz"
        ),
        "policies": {k: v.to_dict() for k, v in policies.items()},
        "null": {},
        "power": {},
        "int8": {},
    }
    if "null" in sections and wanted("null ov-ov"):
        result["null"]["ov-fp32 vs ov-fp32 (other draws)"] = run_cell(
            "null ov", args.null_draws, fp32_against("ov-fp32"), reruns=True
        )
    if "null" in sections:
        if {"ort-fp32", "torch-fp32"} <= pools and wanted("null ort-torch"):
            result["null"]["ort-fp32 vs torch-fp32"] = run_cell(
                "null ort", args.null_draws, fp32_against("ort-fp32")
            )
        if "torch-fp32" in pools and wanted("null ov-torch"):
            result["null"]["ov-fp32 vs torch-fp32"] = run_cell(
                "null ov-torch", args.null_draws, fp32_against("ov-fp32-vs-torch")
            )
    fractions = [float(f) for f in args.fractions.split(",")]
    for fraction in fractions if "power" in sections else ():
        for factor in (1.05, 1.1, 1.25, 1.5):
            key = f"temperature x{factor} ({fraction:.0%} of cases)"
            if not wanted(key):
                continue
            result["power"][key] = run_cell(
                key,
                args.draws,
                fp32_against("ov-fp32", lambda r, t, f=factor: temperature(r, f)),
                fraction,
                reruns=True,
            )
        for scale in (0.1, 0.25, 0.5, 1.0):
            key = f"logit noise {scale}x MC noise ({fraction:.0%} of cases)"
            if not wanted(key):
                continue
            result["power"][key] = run_cell(
                key,
                args.draws,
                fp32_against("ov-fp32", lambda r, t, s=scale: perturb(r, s * noise[t], rng)),
                fraction,
                reruns=True,
            )
    for name, (what, _) in INT8_VARIANTS.items():
        if name not in pools or "int8" not in sections or not wanted(name):
            continue

        def make(keep, name=name):
            ref = {t: runs("ov-fp32", t, keep[t], 1)[0] for t in tasks}
            cand = {t: runs(name, t, keep[t], 1)[0] for t in tasks}
            return ref, cand, None

        result["int8"][name] = {"what": what, **run_cell(name, args.draws, make)}
    result["seconds"] = round(time.time() - started, 1)
    result["machine"] = {"cpus": os.cpu_count(), "loadavg_end": os.getloadavg()}
    if args.merge and args.out.is_file():  # cells measured by other processes (sections) stay
        earlier = json.loads(args.out.read_text())
        for section in ("null", "power", "int8"):
            result[section] = {**earlier.get(section, {}), **result[section]}
        result["runs"] = [
            *earlier.get("runs", []),
            {k: earlier.get(k) for k in ("command", "seconds", "machine")},
        ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(table(result))
    return result


def combine(paths: list[Path], out: Path) -> dict:
    """One result file from several evaluation processes over the same stored runs (each ran
    some cells): their cells side by side, every command and its seconds kept."""
    parts = [json.loads(Path(p).read_text()) for p in paths]
    result = {
        k: v
        for k, v in parts[0].items()
        if k not in ("null", "power", "int8", "command", "seconds", "machine")
    }
    result["runs"] = [{k: part.get(k) for k in ("command", "seconds", "machine")} for part in parts]
    # each process saw the sources stored when it started
    result["pool_draws_per_case"] = {
        k: v for part in parts for k, v in part.get("pool_draws_per_case", {}).items()
    }
    for section in ("null", "power", "int8"):
        result[section] = {name: cell for part in parts for name, cell in part.get(section, {}).items()}
    out.write_text(json.dumps(result, indent=2))
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
