"""Adaptive T frontier (issue 19, item 1): which stopping rules keep the drift gate passing,
and at how many fewer suffix rows than fixed T = 30?

Offline study on the real-data model. Step 1 (``collect``) runs the FP32 export R times at
fixed T = T_max over the test split (OpenVINO draws fresh in-graph masks every call, so the
runs are independent) and stores every draw's logits. Step 2 (``study``) pairs the runs
(reference = run r, candidate = run r + 1, every run once on each side) and, for every
stopping rule of a sweep, SIMULATES adaptive T on the candidate's draws: the rule
(:func:`drifa_edge.metrics.sequential.settled`, the function the engine calls) is asked at
the engine's looks T_min, T_min + block, ..., and a case stops at the first look it allows.
The simulated candidate is then judged by the gate's own code,
:func:`drifa_edge.drift.gate.evaluate_drift` with ``cand_used`` (what ``check --adaptive``
calls: the null swaps all T_max draws of both runs, i.e. two fixed-T runs; the candidate's
observed statistics use each case's first ``used`` draws). Fixed T = k against T = T_max is
the same call with every case's ``used = k``; ``used = T_max`` is the FP32-against-FP32
baseline. Nothing of the gate is re-implemented here.

    nice -n 10 python benchmarks/adaptive_frontier.py collect --export /work/runs/real-small-v2-export \\
        --data skin_isic9=/work/shared/data/skin_isic9 --data blood_pbc8=/work/shared/data/blood_pbc8 \\
        --runs 3 --threads 2 --draws /work/runs/adaptive3-frontier/draws.npz
    nice -n 10 python benchmarks/adaptive_frontier.py study --export /work/runs/real-small-v2-export \\
        --draws /work/runs/adaptive3-frontier/draws.npz --out benchmarks/results/adaptive_frontier.json

The draws file stays outside the repository (it holds model outputs on the shared data).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shlex
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from drifa_edge.artifact.card import ModelCard, read_card
from drifa_edge.drift.check import adaptive_summary, load_split, open_artifact
from drifa_edge.drift.gate import DriftReport, evaluate_drift
from drifa_edge.drift.policy import DriftPolicy, load_policy
from drifa_edge.inference.adaptive import STOP_MAX, STOP_SETTLED, AdaptiveConfig
from drifa_edge.inference.engine import EngineConfig, run_mc_logits
from drifa_edge.metrics.sequential import Referral, jackknife_score, plugin_score, settled
from drifa_edge.metrics.uncertainty import softmax
from drifa_edge.runtimes.base import RuntimeOptions
from drifa_edge.runtimes.cpu import cpu_summary

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "adaptive_frontier.json"

# ------------------------------------------------------------------ step 1: draws


def collect(
    export: Path,
    data: list[str],
    runs: int,
    samples: int,
    threads: int | None,
    out: Path,
    limit: int | None = None,
) -> None:
    """R independent fixed-T runs of the export's OpenVINO FP32 build, logits saved per run
    (after each run, so an interrupted collection keeps what it finished)."""
    rts = open_artifact(export, "openvino", RuntimeOptions(precision="fp32", threads=threads))
    card = rts[0].card
    images, labels, ids = load_split(data, card, "test", limit)
    logits: dict[str, list[np.ndarray]] = {t: [] for t in card.task_names}
    seconds = []
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        for r in range(runs):
            started = time.perf_counter()
            z = run_mc_logits(rts, images, EngineConfig(samples=samples, seed=r))
            seconds.append(time.perf_counter() - started)
            for t in card.task_names:
                logits[t].append(z[t].astype(np.float32))
            np.savez_compressed(
                out,
                **{f"logits__{t}": np.stack(v) for t, v in logits.items()},  # (R, N, T, C)
                **{f"labels__{t}": y for t, y in labels.items()},
                ids=np.asarray([str(i) for i in ids]),
                seconds=np.asarray(seconds),
                meta=json.dumps(
                    {"export": str(export), "data": data, "runtime": "openvino", "precision": "fp32"}
                ),
            )
            print(f"run {r + 1}/{runs}: {seconds[-1]:.0f} s, {len(ids)} cases x T={samples}", flush=True)
    finally:
        for rt in rts:
            rt.close()


def load_draws(path: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict]:
    """(logits per task (R, N, T, C), labels per task (N,), meta) from :func:`collect`'s file."""
    with np.load(path) as f:
        logits = {k.split("__", 1)[1]: f[k] for k in f.files if k.startswith("logits__")}
        labels = {k.split("__", 1)[1]: f[k] for k in f.files if k.startswith("labels__")}
        meta = json.loads(str(f["meta"]))
        meta["collect_seconds"] = [round(float(s), 1) for s in f["seconds"]]
    return logits, labels, meta


# ------------------------------------------------------------------ step 2: simulated stops

StopRule = Callable[[Mapping[str, np.ndarray]], np.ndarray]  # {task: (A, n, C)} -> (A,) may stop


def simulate_used(
    probs: Mapping[str, np.ndarray], looks: tuple[int, ...], may_stop: StopRule
) -> tuple[np.ndarray, list[str]]:
    """Draws per case (N,) and why each stopped, asking ``may_stop`` at each look on the first
    n draws of the cases still running, as :func:`drifa_edge.inference.adaptive.run_adaptive`
    does (a case's decision depends only on its own draws, so the engine's case groups do not
    matter)."""
    t_max = looks[-1]
    cases = next(iter(probs.values())).shape[0]
    used = np.full(cases, t_max, dtype=np.int64)
    stop = [STOP_MAX] * cases
    active = np.ones(cases, dtype=bool)
    for n in looks[:-1]:
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        done = np.asarray(may_stop({t: p[idx, :n] for t, p in probs.items()}), dtype=bool)
        used[idx[done]] = n
        for i in idx[done]:
            stop[i] = STOP_SETTLED
        active[idx[done]] = False
    return used, stop


def library_rule(adaptive: AdaptiveConfig, referral: Mapping[str, Referral], t_max: int) -> StopRule:
    """The engine's own rule (:func:`~drifa_edge.metrics.sequential.settled`) for ``adaptive``."""

    def may_stop(samples: Mapping[str, np.ndarray]) -> np.ndarray:
        return settled(
            samples, referral, max_samples=t_max, rule=adaptive.rule, error_rate=adaptive.error_rate,
            tolerance=adaptive.se_tolerance,
        )  # fmt: skip

    return may_stop


# ------------------------------------------------------------------ prototype rules (simulation only)
# Each adds a condition to the library's decision rule, aimed at a gate criterion the decision
# rule alone does not protect. None is in the engine; one that reached the target with
# the gate passing would be moved into drifa_edge.metrics.sequential.


def _and(base: StopRule, extra: Callable[[str, np.ndarray], np.ndarray]) -> StopRule:
    def may_stop(samples: Mapping[str, np.ndarray]) -> np.ndarray:
        ok = np.asarray(base(samples), dtype=bool).copy()
        for task, p in samples.items():
            ok &= extra(task, p)
        return ok

    return may_stop


def mi_precision(base: StopRule, referral: Mapping[str, Referral], relative: float, floor: float) -> StopRule:
    """... and the jackknife standard error of the referral score (MI) is at most
    ``relative`` times its jackknife estimate, or ``floor`` nats (the Spearman-of-MI criterion
    compares MI ranks, which move with the MI's relative error)."""

    def extra(task: str, p: np.ndarray) -> np.ndarray:
        estimate, se = jackknife_score(p, referral.get(task, Referral()).metric)
        return se <= np.maximum(relative * np.maximum(estimate, 0.0), floor)

    return _and(base, extra)


def rank_precision(
    base: StopRule, referral: Mapping[str, Referral], population: Mapping[str, np.ndarray], width: float
) -> StopRule:
    """... and the jackknife interval of the score (estimate +/- one standard error) spans at
    most ``width`` of the population's score quantiles (``population`` per task: sorted
    scores of a fixed-T run; here the reference run's, standing in for a validation run):
    the rank noise Spearman sees, per case."""

    def extra(task: str, p: np.ndarray) -> np.ndarray:
        estimate, se = jackknife_score(p, referral.get(task, Referral()).metric)
        pop = population[task]
        lo, hi = np.searchsorted(pop, estimate - se), np.searchsorted(pop, estimate + se)
        return (hi - lo) / pop.size <= width

    return _and(base, extra)


def kl_allocation(base: StopRule, scale: float) -> StopRule:
    """... and sqrt(tr A) / n <= ``scale``, A the draws' covariance in the Fisher metric
    diag(1 / mean): the expected KL between the n-draw and the T_max mean is about
    tr(A) (1/n - 1/T_max) / 2, and a fixed total of draws makes the sum over cases smallest
    with n proportional to sqrt(tr A) (Neyman's optimal allocation, J. R. Stat. Soc. 97(4), 1934)."""

    def extra(task: str, p: np.ndarray) -> np.ndarray:
        n = p.shape[1]
        mean = p.mean(axis=1)
        trace = (p.var(axis=1, ddof=1) / np.maximum(mean, 1e-12)).sum(axis=-1)
        return np.sqrt(trace) / n <= scale

    return _and(base, extra)


def prototype_rules(
    referral: Mapping[str, Referral], t_max: int
) -> list[tuple[str, dict, AdaptiveConfig, Callable[[Mapping[str, np.ndarray]], StopRule]]]:
    """(name, setting, engine config of the looks, rule of a score population) of every
    prototype in the sweep."""
    out = []
    for m, e in ((4, 0.05), (6, 0.05)):
        a = AdaptiveConfig(min_samples=m, block=3, error_rate=e)
        base = library_rule(a, referral, t_max)
        for rel in (0.2, 0.3, 0.5):
            for floor in (1e-3, 1e-2):
                out.append(
                    (
                        f"decision+mi_precision T_min={m} rel={rel} floor={floor}",
                        {"prototype": "mi_precision", "relative": rel, "floor": floor},
                        a,
                        lambda pop, base=base, rel=rel, floor=floor: mi_precision(base, referral, rel, floor),
                    )
                )
        for width in (0.05, 0.1, 0.2):
            out.append(
                (
                    f"decision+rank_precision T_min={m} width={width}",
                    {"prototype": "rank_precision", "width": width},
                    a,
                    lambda pop, base=base, width=width: rank_precision(base, referral, pop, width),
                )
            )
        for scale in (0.005, 0.01, 0.02, 0.03, 0.04):
            out.append(
                (
                    f"decision+kl_allocation T_min={m} scale={scale}",
                    {"prototype": "kl_allocation", "scale": scale},
                    a,
                    lambda pop, base=base, scale=scale: kl_allocation(base, scale),
                )
            )
    return out


# ------------------------------------------------------------------ why a criterion binds


def mi_diagnostics(probs: list[dict[str, np.ndarray]], labels: dict[str, np.ndarray], metric: str) -> dict:
    """Per task, over the scored cases: quantiles of the fixed-T referral score (run 0), the
    spread of its log across cases, the MC noise of each case's log score between the R runs
    (median per score quartile), and Spearman of the T_max score of run r with the n-draw
    score of run r + 1 (what the gate's Spearman criterion sees at fixed T = n)."""
    from scipy.stats import spearmanr

    out = {}
    runs = len(probs)
    for task, y in labels.items():
        keep = y >= 0
        full = np.stack([plugin_score(p[task][keep], metric) for p in probs])  # (R, N)
        log = np.log(np.maximum(full, 1e-12))
        mean_log, noise = log.mean(axis=0), log.std(axis=0, ddof=1)
        edges = np.quantile(mean_log, [0.0, 0.25, 0.5, 0.75, 1.0])
        quartile = np.clip(np.searchsorted(edges, mean_log, side="right") - 1, 0, 3)
        t_max = probs[0][task].shape[1]
        spearman = {}
        for n in (4, 7, 10, 14, 20, t_max):
            short = [plugin_score(p[task][keep][:, :n], metric) for p in probs]
            spearman[str(n)] = float(
                np.mean([spearmanr(full[r], short[(r + 1) % runs])[0] for r in range(runs)])
            )
        out[task] = {
            "cases": int(keep.sum()),
            "score_quantiles_0_10_50_90_100": np.quantile(full[0], [0, 0.1, 0.5, 0.9, 1.0]).tolist(),
            "sd_of_log_score_across_cases": float(mean_log.std(ddof=1)),
            "median_mc_sd_of_log_score_by_quartile": [
                float(np.median(noise[quartile == q])) for q in range(4)
            ],
            "spearman_full_vs_first_n_draws": spearman,
        }
    return out


# ------------------------------------------------------------------ the gate on a simulated candidate


def judge(
    ref_probs: dict[str, np.ndarray],
    cand_probs: dict[str, np.ndarray],
    labels: dict[str, np.ndarray],
    card: ModelCard,
    policy: DriftPolicy,
    used: np.ndarray | None,
) -> DriftReport:
    """The gate's verdict, as ``check --adaptive`` computes it (``used`` None: fixed T_max)."""
    return evaluate_drift(ref_probs, cand_probs, labels, card, card, policy, seed=0, cand_used=used)


# the criteria on the class and referral decisions (the rest judge the continuous uncertainty)
DECISION_CRITERIA = (
    "referral_agreement",
    "referral_rate_diff",
    "accuracy_delta",
    "macro_f1_delta",
    "ece_delta",
)


def report_summary(report: DriftReport) -> dict:
    """Verdict, failures and, per task, every criterion's value, null median, limit and verdict."""
    tasks = {}
    for name, task in report.tasks.items():
        tasks[name] = {
            "changed_cases": len(task.changed),
            "changed_by_noise": task.changed_by_noise,
            "criteria": {
                c.name: {
                    "value": c.value,
                    "null_median": c.noise,
                    "limit": c.threshold,
                    "passed": c.passed,
                    "not_significant": c.not_significant,
                }
                for c in task.criteria
            },
        }
    return {
        "verdict": "pass" if report.passed else "fail",
        "failures": [f"{c.task}: {c.name}" for c in report.failures],
        "tasks": tasks,
    }


def aggregate(per_pair: list[dict]) -> dict:
    """Per task and criterion over the run pairs: median value, median null median, median
    limit, and in how many pairs it failed; per pair only the verdict and the draws."""
    out: dict[str, dict] = {}
    for task in per_pair[0]["tasks"]:
        crits = {}
        for crit in per_pair[0]["tasks"][task]["criteria"]:
            got = [p["tasks"][task]["criteria"][crit] for p in per_pair]
            crits[crit] = {
                "value": float(np.median([g["value"] for g in got])),
                "null_median": float(np.median([g["null_median"] for g in got])),
                "limit": float(np.median([g["limit"] for g in got])),
                "failed_pairs": sum(not g["passed"] for g in got),
                # passed although beyond the limit: the difference test did not reject
                "beyond_limit_not_significant_pairs": sum(g["not_significant"] for g in got),
            }
        changed = [p["tasks"][task]["changed_cases"] for p in per_pair]
        noise = [p["tasks"][task]["changed_by_noise"] for p in per_pair]
        out[task] = {
            "changed_cases": float(np.median(changed)),
            "changed_by_noise": float(np.median(noise)),
            "criteria": crits,
        }
    return out


def sweep_configs(quick: bool) -> list[AdaptiveConfig]:
    """The stopping rules of the sweep (``quick``: a handful, for a smoke run)."""
    if quick:
        return [AdaptiveConfig(), AdaptiveConfig(rule="both", se_tolerance=0.02)]
    out = [
        AdaptiveConfig(min_samples=m, block=b, error_rate=e)
        for m, b, e in itertools.product((2, 4, 6, 8, 10), (1, 3, 5), (0.01, 0.05, 0.2))
    ]
    out += [  # a high T_min: every case draws what the MI ranking needs, the rule trims the rest
        AdaptiveConfig(min_samples=m, block=b, error_rate=e)
        for m, b, e in itertools.product((12, 14, 16, 18, 20), (1, 3), (0.01, 0.05))
    ]
    out += [
        AdaptiveConfig(rule="precision", se_tolerance=s, min_samples=m, block=3)
        for s, m in itertools.product((0.005, 0.01, 0.02, 0.03, 0.05, 0.08), (4, 10))
    ]
    for rule in ("both", "either"):
        out += [
            AdaptiveConfig(rule=rule, se_tolerance=s, error_rate=e)
            for s, e in itertools.product((0.01, 0.02, 0.03, 0.05), (0.01, 0.05, 0.2))
        ]
    return out


def fixed_ks(t_max: int, quick: bool) -> list[int]:
    ks = [4, 10] if quick else [*range(4, 21), 25]
    return [k for k in ks if k < t_max]


def study(args: argparse.Namespace) -> dict:
    logits, labels, meta = load_draws(args.draws)
    card = read_card(args.export)
    policy = load_policy(args.policy) if args.policy else DriftPolicy()
    runs, cases, t_max = next(iter(logits.values())).shape[:3]
    if runs < 2:
        sys.exit(f"{args.draws}: needs >= 2 runs to pair, has {runs}")
    probs = [
        {t: softmax(z[r], card.temperature_of(t)) for t, z in logits.items()} for r in range(runs)
    ]  # per run: {task: (N, T, C)}
    pairs = [(r, (r + 1) % runs) for r in range(runs)] if runs > 2 else [(0, 1), (1, 0)]
    pairs = pairs[: args.pairs]
    referral = {t: Referral(r.metric, r.threshold) for t, r in card.referral.items()}

    def population(ref: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Sorted fixed-T referral scores of a run, per task."""
        return {t: np.sort(plugin_score(ref[t], r.metric)) for t, r in referral.items()}

    def evaluate(
        name: str, setting: dict, used_of: Callable[[dict, dict], tuple[np.ndarray, list[str]] | None]
    ) -> dict:
        per_pair = []
        for ref, cand in pairs:
            got = used_of(probs[cand], probs[ref])
            used, stop = (
                got if got is not None else (np.full(cases, t_max, dtype=np.int64), [STOP_MAX] * cases)
            )
            report = judge(probs[ref], probs[cand], labels, card, policy, None if got is None else used)
            draws = {
                k: v
                for k, v in adaptive_summary(used, stop, t_max, AdaptiveConfig()).items()
                if k != "config"
            }
            per_pair.append(
                {"reference_run": ref, "candidate_run": cand, "draws": draws, **report_summary(report)}
            )
        tasks = aggregate(per_pair)
        decisions_ok = sum(
            not any(not p["tasks"][t]["criteria"][c]["passed"] for t in p["tasks"] for c in DECISION_CRITERIA)
            for p in per_pair
        )
        row = {
            "name": name,
            **setting,
            "row_ratio_mean": float(np.mean([p["draws"]["row_ratio"] for p in per_pair])),
            "mean_draws": float(np.mean([p["draws"]["mean_samples"] for p in per_pair])),
            "p90_draws": float(np.median([p["draws"]["p90_samples"] for p in per_pair])),
            "passed_pairs": sum(p["verdict"] == "pass" for p in per_pair),
            "decision_criteria_passed_pairs": decisions_ok,
            "histogram_first_pair": per_pair[0]["draws"]["histogram"],
            "tasks": tasks,
            "pairs": [
                {
                    "reference_run": p["reference_run"],
                    "candidate_run": p["candidate_run"],
                    "mean_draws": p["draws"]["mean_samples"],
                    "verdict": p["verdict"],
                }
                for p in per_pair
            ],
        }
        fails = {
            f"{t}:{c}": v["failed_pairs"]
            for t, task in tasks.items()
            for c, v in task["criteria"].items()
            if v["failed_pairs"]
        }
        print(
            f"{name:52s} x{row['row_ratio_mean']:.2f} pass {row['passed_pairs']}/{len(per_pair)} "
            f"decisions {decisions_ok}/{len(per_pair)}  " + " ".join(f"{k}={v}" for k, v in fails.items()),
            flush=True,
        )
        return row

    rows = [
        evaluate("fixed T_max (FP32 against FP32)", {"kind": "fixed", "samples": t_max}, lambda p, ref: None)
    ]
    for k in fixed_ks(t_max, args.quick):
        rows.append(
            evaluate(
                f"fixed T={k}",
                {"kind": "fixed", "samples": k},
                lambda p, ref, k=k: (np.full(cases, k, dtype=np.int64), [STOP_SETTLED] * cases),
            )
        )
    for adaptive in [a for a in sweep_configs(args.quick) if a.min_samples < t_max]:
        name = (
            f"{adaptive.rule} T_min={adaptive.min_samples} block={adaptive.block} "
            f"err={adaptive.error_rate} se={adaptive.se_tolerance}"
        )
        rows.append(
            evaluate(
                name,
                {"kind": "adaptive", "config": adaptive.to_dict()},
                lambda p, ref, a=adaptive: simulate_used(p, a.looks(t_max), library_rule(a, referral, t_max)),
            )
        )
    if args.prototypes:
        for name, setting, a, make in prototype_rules(referral, t_max):
            rows.append(
                evaluate(
                    name,
                    {"kind": "prototype", "config": a.to_dict(), **setting},
                    # the population of rank_precision: the pair's reference run (never the candidate's draws)
                    lambda p, ref, a=a, make=make: simulate_used(p, a.looks(t_max), make(population(ref))),
                )
            )
    passing = [r for r in rows if r["passed_pairs"] == len(pairs) and r.get("kind") != "fixed"]
    best = max(passing, key=lambda r: r["row_ratio_mean"], default=None)
    fixed_passing = [r for r in rows if r["passed_pairs"] == len(pairs) and r.get("kind") == "fixed"]
    smallest_fixed = min(fixed_passing, key=lambda r: r["samples"], default=None)
    return {
        "what": __doc__.split("\n")[0],
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "cpu": {**cpu_summary(), "load_average": os.getloadavg()},
        "draws": {"file": str(args.draws), "runs": runs, "cases": cases, "max_samples": t_max, **meta},
        "model_card": {
            "path": str(args.export),
            "referral": {t: r.to_dict() for t, r in card.referral.items()},
        },
        "policy": policy.to_dict(),
        "pairs": [{"reference_run": a, "candidate_run": b} for a, b in pairs],
        "referral_score_diagnostics": mi_diagnostics(probs, labels, policy.referral_metric),
        "best_passing_adaptive": None
        if best is None
        else {k: best[k] for k in ("name", "row_ratio_mean", "config")},
        "smallest_passing_fixed_t": None
        if smallest_fixed is None
        else {k: smallest_fixed[k] for k in ("name", "row_ratio_mean")},
        "rows": rows,
    }


def rounded(value, digits: int = 5):
    """``value`` with every float rounded to ``digits`` decimals (keeps the JSON small)."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [rounded(v, digits) for v in value]
    return value


CRITERION_COLUMNS = ("value", "null_median", "limit", "failed_pairs", "beyond_limit_not_significant_pairs")


def compact(record: dict) -> dict:
    """The JSON as written: each criterion as a list in :data:`CRITERION_COLUMNS` order and the
    pairs as parallel lists (one row per setting stays a few lines)."""
    rows = []
    for row in record["rows"]:
        row = dict(row)
        row["tasks"] = {
            t: {
                **{k: v for k, v in task.items() if k != "criteria"},
                "criteria": {c: [v[k] for k in CRITERION_COLUMNS] for c, v in task["criteria"].items()},
            }
            for t, task in row["tasks"].items()
        }
        pairs = row.pop("pairs")
        row["pair_verdicts"] = "".join("P" if p["verdict"] == "pass" else "F" for p in pairs)
        row["pair_mean_draws"] = [p["mean_draws"] for p in pairs]
        rows.append(row)
    return rounded(
        {
            **record,
            "criterion_columns": list(CRITERION_COLUMNS),
            "pair_verdicts": "P = the gate passed that (reference, candidate) pair, F = failed, in 'pairs' order",
            "rows": rows,
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="step", required=True)
    c = sub.add_parser("collect", help="R fixed-T runs of the export, every draw's logits")
    c.add_argument("--export", type=Path, required=True)
    c.add_argument("--data", action="append", required=True)
    c.add_argument("--runs", type=int, default=3)
    c.add_argument("--samples", type=int, default=30)
    c.add_argument("--threads", type=int, default=None)
    c.add_argument("--draws", type=Path, required=True)
    c.add_argument("--limit", type=int, default=None, help="first N test cases only (smoke run)")
    s = sub.add_parser("study", help="simulate stopping rules on the draws, judge each with the gate")
    s.add_argument(
        "--export", type=Path, required=True, help="the export whose card (thresholds) the runs used"
    )
    s.add_argument("--draws", type=Path, required=True)
    s.add_argument("--policy", default=None)
    s.add_argument("--pairs", type=int, default=3, help="at most this many (reference, candidate) run pairs")
    s.add_argument("--quick", action="store_true", help="a handful of settings (smoke run)")
    s.add_argument("--prototypes", action="store_true", help="also the prototype rules (simulation only)")
    s.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.step == "collect":
        collect(args.export, args.data, args.runs, args.samples, args.threads, args.draws, args.limit)
        return
    record = study(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(compact(record), indent=1) + "\n")
    print("best passing adaptive rule:", record["best_passing_adaptive"])


if __name__ == "__main__":
    main()
