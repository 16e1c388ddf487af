"""OOD referral on real data: the Mahalanobis OOD score vs mutual information vs predictive
entropy, per task, in-distribution test cases against foreign images sent to the task.

In-distribution: the test split of each task (rows paired as in training). OOD per task:
another shared data set sent to that task's input (pap smear crops to the skin task, chest
X-rays to the blood task), with the other task's input kept in-distribution; blank, noise and
tiny (1x1) images are reported separately (the input-quality rule may catch them first).
Every score's threshold is fitted on the validation split for the same false-referral rate.
Both feature spaces (the task's branch slice, the fused embedding) are fitted from the same
embeddings, so the choice between them is measured here.

  nice -n 10 python benchmarks/ood_referral.py --checkpoint runs/real-small \\
      --data skin_isic9=../shared/data/skin_isic9 --data blood_pbc8=../shared/data/blood_pbc8 \\
      --foreign skin_isic9=../shared/data/pap_smear_cric6 \\
      --foreign blood_pbc8=../shared/data/chest_xray_pneumoniamnist --out benchmarks/results/ood_referral.json
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
from drifa_edge.inference.engine import EngineConfig, run_mc_embedding
from drifa_edge.metrics.mahalanobis import fit_class_gaussians, mahalanobis_scores
from drifa_edge.metrics.uncertainty import fit_referral_threshold, summarize
from drifa_edge.runtimes.base import RuntimeOptions, open_runtime


def run(rt, images, T):
    """(MC-mean embedding (N, D), {task: {"mutual_information": (N,), "predictive_entropy": (N,)}})."""
    probs, emb = run_mc_embedding(rt, images, EngineConfig(samples=T, seed=0, max_rows=64))
    unc = {}
    for task, p in probs.items():
        s = summarize(p)
        unc[task] = {k: np.asarray(s[k]) for k in ("mutual_information", "predictive_entropy")}
    return emb, unc


def foreign_inputs(card, task, base, images, limit):
    """Copies of in-distribution rows with ``task``'s input replaced by foreign images."""
    k = card.task_names.index(task)
    n = min(limit, len(base), len(images[0]))
    out = [x[:n].copy() for x in images]
    out[k] = np.stack([preprocess(img, card.preprocess[task]) for img in base[:n]])
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data", action="append", required=True)
    ap.add_argument("--foreign", action="append", default=[], help="TASK=PATH of a foreign data set")
    ap.add_argument("--samples", "-T", type=int, default=10)
    ap.add_argument("--fit-limit", type=int, default=800)
    ap.add_argument("--foreign-limit", type=int, default=300)
    ap.add_argument("--rate", type=float, default=0.05)
    ap.add_argument("--shrinkage", type=float, default=0.1)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    started = time.time()
    info = machine_info()
    rt = open_runtime("torch", args.checkpoint, RuntimeOptions(threads=1))
    card = rt.card
    T = args.samples
    rng = np.random.default_rng(0)
    emb, labels = {}, {}
    unc = {}
    for split, limit in (("train", args.fit_limit), ("val", None), ("test", None)):
        images, labels[split], _ = load_split(args.data, card, split, limit)
        emb[split], unc[split] = run(rt, images, T)
        if split == "test":
            test_images = images
        print(f"{split}: {len(emb[split])} rows, {time.time() - started:.0f} s", flush=True)
    n_gen = 30
    size = card.model.image_size
    generated = {
        "blank": lambda c: np.zeros((size, size, c), np.float32),
        "noise": lambda c: rng.random((size, size, c)).astype(np.float32),
        "tiny_1x1": lambda c: rng.random((1, 1, c)).astype(np.float32),
    }
    foreign = dict(f.split("=", 1) for f in args.foreign)
    ood_sets: dict[str, dict[str, tuple]] = {t: {} for t in card.task_names}
    for task in card.task_names:
        channels = card.preprocess[task].channels
        if task in foreign:
            ((name, ds),) = load_datasets([f"foreign={foreign[task]}"]).items()
            idx = rng.permutation(len(ds))[: args.foreign_limit]
            imgs = [ds.load(int(i)) for i in idx]
            x = foreign_inputs(card, task, imgs, test_images, args.foreign_limit)
            ood_sets[task][Path(foreign[task]).name] = run(rt, x, T)
        for kind, make in generated.items():
            x = foreign_inputs(card, task, [make(channels) for _ in range(n_gen)], test_images, n_gen)
            ood_sets[task][kind] = run(rt, x, T)
        print(f"OOD inputs of {task}: {time.time() - started:.0f} s", flush=True)

    results = {}
    for task in card.task_names:
        results[task] = {}
        for space in ("branch", "fused"):
            a, b = task_columns(card, task, space)
            _, means, prec = fit_class_gaussians(emb["train"][:, a:b], labels["train"][task], args.shrinkage)

            val_emb, test_emb = emb["val"][:, a:b], emb["test"][:, a:b]
            keep_val, keep_test = labels["val"][task] >= 0, labels["test"][task] >= 0
            scores = {
                f"ood_mahalanobis_{space}": (
                    mahalanobis_scores(val_emb, means, prec)[keep_val],
                    mahalanobis_scores(test_emb, means, prec)[keep_test],
                )
            }
            if space == "branch":
                for m in ("mutual_information", "predictive_entropy"):
                    scores[m] = (unc["val"][task][m][keep_val], unc["test"][task][m][keep_test])
            for name, (val_s, test_s) in scores.items():
                thr = fit_referral_threshold(val_s, args.rate)
                row = {"threshold": thr, "referral_rate_in_distribution_test": float((test_s > thr).mean())}
                for ood_name, (e, u) in ood_sets[task].items():
                    s = (
                        mahalanobis_scores(e[:, a:b], means, prec)
                        if name.startswith("ood_")
                        else u[task][name]
                    )
                    both = np.concatenate([test_s, s])
                    pos = np.r_[np.zeros(len(test_s), bool), np.ones(len(s), bool)]
                    row[ood_name] = {
                        "auroc": M.auroc(both, pos),
                        "referral_rate": float((s > thr).mean()),
                        "cases": len(s),
                    }
                results[task][name] = row
    out = {
        "command": "python benchmarks/ood_referral.py "
        + " ".join(f"--data {d}" for d in args.data)
        + " "
        + " ".join(f"--foreign {f}" for f in args.foreign)
        + f" -T {T} --fit-limit {args.fit_limit}",
        "checkpoint": str(args.checkpoint),
        "checkpoint_test_accuracy": {
            t: v.get("accuracy") for t, v in (card.metrics.get("test") or {}).items() if isinstance(v, dict)
        },
        "samples_T": T,
        "target_false_referral_rate": args.rate,
        "shrinkage": args.shrinkage,
        "cases": {s: len(emb[s]) for s in emb},
        "note": "AUROC: in-distribution test rows (negatives) vs OOD inputs (positives), higher score = "
        "more OOD; referral_rate: share above the threshold fitted on val for the target rate",
        "results": results,
        "machine": info,
        "seconds": round(time.time() - started, 1),
    }
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(json.dumps(results, indent=1)[:3000])


if __name__ == "__main__":
    main()
