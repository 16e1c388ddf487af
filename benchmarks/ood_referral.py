"""OOD referral on real data: feature-space OOD scores vs mutual information vs predictive
entropy, per task, in-distribution test cases against foreign images sent to the task.

In-distribution: the test split of each task (rows paired as in training). OOD per task:
another shared data set sent to that task's input (pap smear crops to the skin task, chest
X-rays to the blood task), with the other task's input kept in-distribution; blank, noise and
tiny (1x1) images are reported separately (the input-quality rule may catch them first).
Every score's threshold is fitted on the validation split for the same false-referral rate.

Candidates (``--candidates``; every density fitted on the training rows only):
- feature: the MC-mean embedding at T = 5, 10, 30 (the first t of the 30 samples of each
  case) or the deterministic embedding (dropout off); ``prefix``: the task's own pooled
  prefix output (stem + first block, channel means and standard deviations, deterministic);
- space: the task's branch slice of the embedding, or the whole fused embedding;
- density: ``maha`` (Lee et al. 2018, min over classes, shared shrunk covariance),
  ``rmaha`` (relative Mahalanobis, Ren et al. 2021: minus the distance under one Gaussian
  of all training features), ``knn`` (k-th nearest training neighbour of the L2-normalised
  features, Sun et al. 2022); ``ens``: the sum of the prefix and embedding Mahalanobis
  scores, each standardised by its in-distribution validation mean and standard deviation
  (a feature ensemble as in Lee et al. 2018, weights fixed instead of fitted on OOD data).
Selection (no test OOD data): the candidate with the best mean AUROC, over both tasks, of
validation cases against the *other task's* validation images sent to the task (a routing
mistake made from the training data itself); the test OOD sets are only reported.

Mask streams: every case runs on its own seed (``case_seed(seed, "<set>:<row>")``, as
predict does), so no set reuses the masks of the rows the density was fitted on.

The model's outputs are cached (``--cache``, npz) so the analysis reruns without the model:

  nice -n 10 python benchmarks/ood_referral.py --checkpoint runs/real-small-v2 \\
      --data skin_isic9=../shared/data/skin_isic9 --data blood_pbc8=../shared/data/blood_pbc8 \\
      --foreign skin_isic9=../shared/data/pap_smear_cric6 \\
      --foreign blood_pbc8=../shared/data/chest_xray_pneumoniamnist -T 30 \\
      --cache runs/ood-cache.npz --out benchmarks/results/ood_referral_v2.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from drifa_edge import metrics as M
from drifa_edge.bench.runner import machine_info
from drifa_edge.data.preprocess import preprocess
from drifa_edge.data.sources import load_datasets
from drifa_edge.drift.check import load_split
from drifa_edge.export.ood import task_columns
from drifa_edge.inference.engine import EngineConfig, run_member_embedding_draws
from drifa_edge.inference.manifest import case_seed
from drifa_edge.metrics.mahalanobis import fit_class_gaussians, mahalanobis_scores
from drifa_edge.metrics.uncertainty import fit_referral_threshold, summarize
from drifa_edge.runtimes.base import RuntimeOptions, open_runtime

T_VALUES = (5, 10, 30)
GENERATED = ("blank", "noise", "tiny_1x1")


# ---- stage 1: run the model once, keep every MC sample ----
def prefix_stats(rt, images) -> list[np.ndarray]:
    """Per task (N, 2*W0): channel means and standard deviations of the prefix output."""
    out = []
    for f in rt.run_prefix(images):  # M x (N, W0, H/4, W/4)
        out.append(np.concatenate([f.mean(axis=(2, 3)), f.std(axis=(2, 3))], axis=1))
    return out


def run_set(rt, det, images, name: str, T: int, seed: int) -> dict[str, np.ndarray]:
    n = len(images[0])
    seeds = [case_seed(seed, f"{name}:{i}") for i in range(n)]
    logits, emb = run_member_embedding_draws(
        rt, images, EngineConfig(samples=T, seed=seed, max_rows=60), seeds
    )
    _, emb_det = run_member_embedding_draws(det, images, EngineConfig(samples=1, seed=seed, max_rows=60))
    out = {"emb": emb.astype(np.float32), "emb_det": emb_det[:, 0].astype(np.float32)}
    for k, z in enumerate(logits):
        out[f"logits_{k}"] = z.astype(np.float32)  # (N, T, C)
    for k, p in enumerate(prefix_stats(det, [np.asarray(x, np.float32) for x in images])):
        out[f"prefix_{k}"] = p.astype(np.float32)
    return out


def generated(kind: str, size: int, channels: int, rng) -> np.ndarray:
    """A raw (H, W, C) float image in [0, 1]: blank (zeros), uniform noise, or 1x1 noise."""
    if kind == "blank":
        return np.zeros((size, size, channels), np.float32)
    side = 1 if kind == "tiny_1x1" else size
    return rng.random((side, side, channels)).astype(np.float32)


def with_input(images, k: int, x: np.ndarray) -> list[np.ndarray]:
    """Copies of the first len(x) rows of ``images`` with task k's input replaced by ``x``."""
    n = len(x)
    out = [im[:n].copy() for im in images]
    out[k] = x
    return out


def collect(args) -> dict[str, np.ndarray]:
    started = time.time()
    opts = RuntimeOptions(threads=args.threads)
    rt = open_runtime("torch", args.checkpoint, opts)
    det = open_runtime(
        "torch", args.checkpoint, RuntimeOptions(threads=args.threads, extra={"dropout": "off"})
    )
    card = rt.card
    tasks = card.task_names
    rng = np.random.default_rng(0)
    cache: dict[str, np.ndarray] = {}

    def add(name, images):
        for key, v in run_set(rt, det, images, name, args.samples, args.seed).items():
            cache[f"{name}/{key}"] = v
        print(f"{name}: {len(images[0])} rows, {time.time() - started:.0f} s", flush=True)

    split_images = {}
    for split, limit in (("train", args.fit_limit), ("val", None), ("test", None)):
        images, labels, _ = load_split(args.data, card, split, limit)
        split_images[split] = images
        for t in tasks:
            cache[f"{split}/labels_{t}"] = labels[t]
        add(split, images)
    val = split_images["val"]
    test = split_images["test"]
    size = card.model.image_size
    foreign = dict(f.split("=", 1) for f in args.foreign)
    for k, task in enumerate(tasks):
        other = (k + 1) % len(tasks)  # proxy OOD for selection: the other task's val images
        n = min(args.proxy_limit, len(val[0]))
        x = val[other][:n].copy()
        if x.shape[1] != val[k].shape[1]:  # 1 <-> 3 channels (both normalised the same way here)
            x = np.repeat(x, val[k].shape[1], axis=1) if x.shape[1] == 1 else x.mean(axis=1, keepdims=True)
        add(f"proxy_{task}", with_input(val, k, x))
        if task in foreign:
            ((_, ds),) = load_datasets([f"foreign={foreign[task]}"]).items()
            idx = rng.permutation(len(ds))[: args.foreign_limit]
            x = np.stack([preprocess(ds.load(int(i)), card.preprocess[task]) for i in idx])
            add(f"foreign_{task}", with_input(test, k, x[: len(test[0])]))
            cache[f"foreign_{task}/name"] = np.array(Path(foreign[task]).name)
        for kind in GENERATED:
            x = np.stack(
                [preprocess(generated(kind, size, card.preprocess[task].channels, rng), card.preprocess[task])
                 for _ in range(args.generated)]
            )  # fmt: skip
            add(f"{kind}_{task}", with_input(test, k, x))
    cache["meta"] = np.array(
        json.dumps({"tasks": tasks, "T": args.samples, "seconds": round(time.time() - started, 1)})
    )
    return cache


def collect_runtime(args, name: str, folder: str) -> dict[str, np.ndarray]:
    """val and test MC samples (and the deterministic embedding) of an exported runtime,
    keys ``<split>@<runtime>/...``: the density stays the torch fit, as a site would ship it."""
    started = time.time()
    rt = open_runtime(name, folder, RuntimeOptions(threads=args.threads))
    det = open_runtime(name, folder, RuntimeOptions(threads=args.threads, extra={"dropout": "off"}))
    out = {}
    for split in ("val", "test"):
        images, _, _ = load_split(args.data, rt.card, split, None)
        for key, v in run_set(rt, det, images, split, args.samples, args.seed).items():
            out[f"{split}@{name}/{key}"] = v
        print(f"{split} on {name}: {len(images[0])} rows, {time.time() - started:.0f} s", flush=True)
    return out


def runtime_gap(cache, card, args, name: str) -> dict:
    """Torch vs ``name``: the same torch-fitted Mahalanobis density (branch space) scoring
    the test split's MC-mean (T = 5, 10, 30) and deterministic embeddings of each runtime."""
    tasks = json.loads(str(cache["meta"]))["tasks"]
    out: dict = {}
    for k, task in enumerate(tasks):
        cols = task_columns(card, task, "branch")
        lab = {s: cache[f"{s}/labels_{task}"] for s in ("train", "val", "test")}
        keep_val, keep_test = lab["val"] >= 0, lab["test"] >= 0
        out[task] = {}
        for source in [f"T{t}" for t in T_VALUES] + ["det"]:
            d = Density("maha", features(cache, "train", source, cols, k), lab["train"], args.shrinkage)
            thr = fit_referral_threshold(
                d.score(features(cache, "val", source, cols, k))[keep_val], args.rate
            )
            row = {"threshold_torch_val": float(thr)}
            for rt_name, prefix in (("torch", "test"), (name, f"test@{name}")):
                s = d.score(features(cache, prefix, source, cols, k))[keep_test]
                row[rt_name] = {
                    "median_score": float(np.median(s)),
                    "referral_rate_test": float((s > thr).mean()),
                }
            row["median_ratio"] = row[name]["median_score"] / row["torch"]["median_score"]
            out[task][source] = row
    return out


# ---- stage 2: scores, thresholds, AUROCs ----
def knn_fit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def knn_score(bank: np.ndarray, x: np.ndarray, k: int) -> np.ndarray:
    """Distance to the k-th nearest row of ``bank`` (L2-normalised both), Sun et al. 2022."""
    q = knn_fit(x)
    d2 = np.maximum(2.0 - 2.0 * q @ bank.T, 0.0)  # unit vectors: |a-b|^2 = 2 - 2 a.b
    return np.sqrt(np.sort(d2, axis=1)[:, k - 1])


class Density:
    """One candidate of one task: fit on train features, score any features."""

    def __init__(self, kind: str, x: np.ndarray, y: np.ndarray, shrinkage: float, k: int = 10) -> None:
        self.kind, self.k = kind, k
        keep = y >= 0
        x, y = x[keep], y[keep]
        if kind in ("maha", "rmaha"):
            _, self.means, self.prec = fit_class_gaussians(x, y, shrinkage)
        if kind == "rmaha":  # background: one Gaussian of all training features
            _, self.mean0, self.prec0 = fit_class_gaussians(x, np.zeros(len(x), int), shrinkage)
        if kind == "knn":
            self.bank = knn_fit(x)

    def score(self, x: np.ndarray) -> np.ndarray:
        if self.kind == "knn":
            return knn_score(self.bank, x, self.k)
        s = mahalanobis_scores(x, self.means, self.prec)
        if self.kind == "rmaha":
            # Ren et al. 2021 take min_c (MD_c - MD_0); MD_0 does not depend on c
            s = s - mahalanobis_scores(x, self.mean0, self.prec0)
        return s


def features(cache, set_name: str, source: str, cols: tuple[int, int], k: int) -> np.ndarray:
    if source == "prefix":
        return cache[f"{set_name}/prefix_{k}"].astype(np.float64)
    if source == "det":
        e = cache[f"{set_name}/emb_det"]
    else:  # "T<t>": the MC mean of the first t samples
        e = cache[f"{set_name}/emb"][:, : int(source[1:])].mean(axis=1)
    return e[:, cols[0] : cols[1]].astype(np.float64)


def uncertainty(cache, set_name: str, k: int, T: int, temperature: float) -> dict[str, np.ndarray]:
    z = cache[f"{set_name}/logits_{k}"][:, :T].astype(np.float64) / temperature
    p = np.exp(z - z.max(axis=2, keepdims=True))
    p /= p.sum(axis=2, keepdims=True)
    s = summarize(p)
    return {m: np.asarray(s[m]) for m in ("mutual_information", "predictive_entropy")}


PROXY = "selection_proxy (other task's val images)"


def set_label(cache, set_name: str, task: str) -> str:
    if set_name.startswith("foreign_"):
        return str(cache[f"{set_name}/name"])
    return PROXY if set_name == f"proxy_{task}" else set_name.rsplit("_" + task, 1)[0]


def score_row(val_s, test_s, keep_val, keep_test, scored: dict, rate: float) -> dict:
    """Threshold on val for ``rate``; per scored set AUROC against val (the selection proxy)
    or test in-distribution cases, and the share referred."""
    thr = fit_referral_threshold(val_s[keep_val], rate)
    out = {
        "threshold": float(thr),
        "referral_rate_in_distribution_test": float((test_s[keep_test] > thr).mean()),
    }
    raw = {}
    for name, (s, against) in scored.items():
        neg = val_s[keep_val] if against == "val" else test_s[keep_test]
        pos = np.r_[np.zeros(len(neg), bool), np.ones(len(s), bool)]
        auroc = float(M.auroc(np.concatenate([neg, s]), pos))
        out[name] = {"auroc": auroc, "referral_rate": float((s > thr).mean()), "cases": len(s)}
        raw[name] = (neg, s)
    out["_raw"] = raw  # dropped before writing; for paired bootstrap intervals
    return out


def auroc_difference(a: tuple, b: tuple, reps: int = 2000, seed: int = 0) -> dict:
    """AUROC(a) - AUROC(b) on the same cases, with a 95 % percentile bootstrap interval
    (in-distribution and OOD cases resampled independently, the same draws for a and b)."""
    (neg_a, pos_a), (neg_b, pos_b) = a, b
    rng = np.random.default_rng(seed)
    lab = np.r_[np.zeros(len(neg_a), bool), np.ones(len(pos_a), bool)]

    def diff(i, j):
        return M.auroc(np.r_[neg_a[i], pos_a[j]], lab) - M.auroc(np.r_[neg_b[i], pos_b[j]], lab)

    point = diff(np.arange(len(neg_a)), np.arange(len(pos_a)))
    boots = [
        diff(rng.integers(0, len(neg_a), len(neg_a)), rng.integers(0, len(pos_a), len(pos_a)))
        for _ in range(reps)
    ]
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {"difference": float(point), "ci95": [float(lo), float(hi)], "bootstrap_reps": reps}


def comparisons(results: dict, chosen: str) -> dict:
    """The chosen score against MI and against the embedding-alone score, per task and OOD set."""
    top_t = f"T{T_VALUES[-1]}"
    out = {}
    for task, r in results.items():
        out[task] = {}
        for other in (f"mutual_information|{top_t}", f"predictive_entropy|{top_t}", f"maha|{top_t}|branch"):
            out[task][f"{chosen} - {other}"] = {
                name: auroc_difference(r[chosen]["_raw"][name], r[other]["_raw"][name])
                for name in r[chosen]["_raw"]
            }
    return out


class Standardised:
    """A Mahalanobis density whose scores are standardised by its in-distribution val scores."""

    def __init__(self, cache, source: str, cols, k: int, lab, keep_val, shrinkage: float) -> None:
        self.source, self.cols, self.k = source, cols, k
        self.d = Density("maha", features(cache, "train", source, cols, k), lab["train"], shrinkage)
        v = self.d.score(features(cache, "val", source, cols, k))[keep_val]
        self.mu, self.sd = v.mean(), v.std()

    def score(self, cache, set_name: str) -> np.ndarray:
        return (self.d.score(features(cache, set_name, self.source, self.cols, self.k)) - self.mu) / self.sd


def analyse(cache, card, args) -> dict:
    tasks = json.loads(str(cache["meta"]))["tasks"]
    sources = [f"T{t}" for t in T_VALUES] + ["det"]
    results: dict = {}
    for k, task in enumerate(tasks):
        lab = {s: cache[f"{s}/labels_{task}"] for s in ("train", "val", "test")}
        keep = (lab["val"] >= 0, lab["test"] >= 0)
        ood_sets = [
            s for s in (f"foreign_{task}", *(f"{g}_{task}" for g in GENERATED)) if f"{s}/emb" in cache
        ]
        against = {f"proxy_{task}": "val", **{s: "test" for s in ood_sets}}
        task_res: dict = {}
        for source in [*sources, "prefix"]:
            for space in ("branch", "fused") if source != "prefix" else ("own",):
                cols = task_columns(card, task, space) if source != "prefix" else (0, 0)
                train = features(cache, "train", source, cols, k)
                for kind in ("maha", "rmaha", "knn"):
                    d = Density(kind, train, lab["train"], args.shrinkage, args.knn_k)
                    sc = {s: d.score(features(cache, s, source, cols, k)) for s in ("val", "test", *against)}
                    scored = {set_label(cache, s, task): (sc[s], a) for s, a in against.items()}
                    task_res[f"{kind}|{source}|{space}"] = score_row(
                        sc["val"], sc["test"], *keep, scored, args.rate
                    )
        for source in sources:  # feature ensemble: prefix + embedding Mahalanobis, standardised on val
            for space in ("branch", "fused"):
                parts = [
                    Standardised(cache, "prefix", (0, 0), k, lab, keep[0], args.shrinkage),
                    Standardised(
                        cache, source, task_columns(card, task, space), k, lab, keep[0], args.shrinkage
                    ),
                ]
                sc = {s: sum(p.score(cache, s) for p in parts) for s in ("val", "test", *against)}
                scored = {set_label(cache, s, task): (sc[s], a) for s, a in against.items()}
                task_res[f"ens|prefix+{source}|{space}"] = score_row(
                    sc["val"], sc["test"], *keep, scored, args.rate
                )
        temp = card.temperature_of(task)
        for t in T_VALUES:
            unc = {s: uncertainty(cache, s, k, t, temp) for s in ("val", "test", *against)}
            for m in ("mutual_information", "predictive_entropy"):
                scored = {set_label(cache, s, task): (unc[s][m], a) for s, a in against.items()}
                task_res[f"{m}|T{t}"] = score_row(unc["val"][m], unc["test"][m], *keep, scored, args.rate)
        results[task] = task_res
    return results


def select(results: dict) -> dict:
    """Rank the feature-space candidates by mean selection-proxy AUROC over tasks."""
    key = PROXY
    names = [n for n in next(iter(results.values())) if not n.startswith(("mutual", "predictive"))]
    mean = {n: float(np.mean([results[t][n][key]["auroc"] for t in results])) for n in names}
    ranked = sorted(mean, key=lambda n: -mean[n])
    # deployable: what every runtime computes in one MC run at this run's T (TensorRT engines
    # hold the MC suffix only, so no deterministic embedding)
    top_t = f"T{T_VALUES[-1]}"
    deployable = [n for n in ranked if n.split("|")[1] in ("prefix", top_t, f"prefix+{top_t}")]
    return {
        "criterion": f"mean over tasks of AUROC({key} vs val)",
        "chosen": deployable[0],
        "chosen_among": f"candidates every runtime computes in one MC run at {top_t} (no deterministic pass)",
        "ranking": [[n, round(mean[n], 4)] for n in ranked],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data", action="append", required=True)
    ap.add_argument("--foreign", action="append", default=[], help="TASK=PATH of a foreign data set")
    ap.add_argument("--samples", "-T", type=int, default=30)
    ap.add_argument("--fit-limit", type=int, default=500)
    ap.add_argument("--foreign-limit", type=int, default=150)
    ap.add_argument("--proxy-limit", type=int, default=200)
    ap.add_argument("--generated", type=int, default=30)
    ap.add_argument("--rate", type=float, default=0.05)
    ap.add_argument("--shrinkage", type=float, default=0.1)
    ap.add_argument("--knn-k", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--compare-runtime", action="append", default=[], help="RUNTIME=EXPORT: score val/test there too"
    )
    ap.add_argument("--cache", required=True, help="npz of the model's outputs (written once, then reused)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    if max(T_VALUES) > args.samples:
        ap.error(f"-T must be >= {max(T_VALUES)}")
    from drifa_edge.artifact.card import read_card

    card = read_card(args.checkpoint)
    cache_path = Path(args.cache)
    if not cache_path.is_file():
        np.savez(cache_path, **collect(args))
    with np.load(cache_path, allow_pickle=False) as z:
        cache = {k: z[k] for k in z.files}
    compare = dict(c.split("=", 1) for c in args.compare_runtime)
    missing = {n: f for n, f in compare.items() if f"test@{n}/emb" not in cache}
    for name, folder in missing.items():
        cache.update(collect_runtime(args, name, folder))
    if missing:
        np.savez(cache_path, **cache)
    results = analyse(cache, card, args)
    selection = select(results)
    meta = json.loads(str(cache["meta"]))
    out = {
        "command": "python benchmarks/ood_referral.py --checkpoint "
        + str(args.checkpoint)
        + " "
        + " ".join(f"--data {d}" for d in args.data)
        + " "
        + " ".join(f"--foreign {f}" for f in args.foreign)
        + f" -T {args.samples} --fit-limit {args.fit_limit} --foreign-limit {args.foreign_limit}"
        f" --proxy-limit {args.proxy_limit} --knn-k {args.knn_k}"
        + "".join(f" --compare-runtime {c}" for c in args.compare_runtime),
        "checkpoint": str(args.checkpoint),
        "checkpoint_test_accuracy": {
            t: v.get("accuracy") for t, v in (card.metrics.get("test") or {}).items() if isinstance(v, dict)
        },
        "samples_T": args.samples,
        "target_false_referral_rate": args.rate,
        "shrinkage": args.shrinkage,
        "knn_k": args.knn_k,
        "cases": {s.split("/")[0]: int(v.shape[0]) for s, v in cache.items() if s.endswith("/emb")},
        "note": "candidate names: density|feature|space. AUROC: in-distribution test rows (negatives; val rows "
        "for the selection proxy) vs OOD inputs (positives), higher score = more OOD; referral_rate: share "
        "above the threshold fitted on val for the target rate. Mask streams: one seed per case and set.",
        "selection": selection,
        "auroc_differences": comparisons(results, selection["chosen"]),
        "runtime_gap": {n: runtime_gap(cache, card, args, n) for n in compare},
        "results": results,
        "machine": machine_info(),
        "model_seconds": meta["seconds"],
    }
    for r in results.values():
        for row in r.values():
            row.pop("_raw", None)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(json.dumps(out["selection"], indent=1)[:4000])


if __name__ == "__main__":
    main()
