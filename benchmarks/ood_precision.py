"""Does an INT8 build score OOD like FP32? The shipped code path (Predictor, records) on
an export with ``ood.npz``: per task, the share of test cases and of foreign images flagged
``ood`` and the rank correlation of ``ood_score`` between two precisions of one runtime.
(The drift gate's OOD criterion is the real test; this is a quick look at one build.)

  nice -n 10 python benchmarks/ood_precision.py --export EXPORT --runtime onnxruntime \\
      --data skin_isic9=../shared/data/skin_isic9 --data blood_pbc8=../shared/data/blood_pbc8 \\
      --foreign skin_isic9=../shared/data/pap_smear_cric6 -T 30 --out benchmarks/results/ood_precision.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from drifa_edge.bench.runner import machine_info
from drifa_edge.data.preprocess import preprocess
from drifa_edge.data.sources import load_datasets
from drifa_edge.drift.check import load_split
from drifa_edge.inference.engine import EngineConfig
from drifa_edge.inference.manifest import Case
from drifa_edge.inference.predictor import Predictor, PreparedCase
from drifa_edge.runtimes.base import RuntimeOptions


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--export", required=True)
    ap.add_argument("--runtime", default="onnxruntime")
    ap.add_argument("--data", action="append", required=True)
    ap.add_argument("--foreign", action="append", default=[])
    ap.add_argument("--precisions", default="fp32,int8")
    ap.add_argument("--foreign-limit", type=int, default=150)
    ap.add_argument("-T", "--samples", type=int, default=30)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    started = time.time()
    from drifa_edge.artifact.card import read_card

    card = read_card(args.export)
    tasks = card.task_names
    images, labels, _ = load_split(args.data, card, "test", None)
    sets = {"test": (images, {t: labels[t] >= 0 for t in tasks})}
    rng = np.random.default_rng(0)
    for spec in args.foreign:
        task, path = spec.split("=", 1)
        ((_, ds),) = load_datasets([f"foreign={path}"]).items()
        idx = rng.permutation(len(ds))[: args.foreign_limit]
        k = tasks.index(task)
        x = np.stack([preprocess(ds.load(int(i)), card.preprocess[task]) for i in idx])[: len(images[0])]
        imgs = [im[: len(x)].copy() for im in images]
        imgs[k] = x
        sets[f"{Path(path).name}->{task}"] = (imgs, {task: np.ones(len(x), bool)})
    scores: dict = {}
    for precision in args.precisions.split(","):
        options = RuntimeOptions(precision=precision, threads=1)
        with Predictor.open(
            args.export, args.runtime, options, EngineConfig(samples=args.samples, seed=0)
        ) as p:
            for name, (imgs, keep) in sets.items():
                items = [
                    PreparedCase(Case(f"{name}-{i}", {t: None for t in tasks}), [x[i] for x in imgs])
                    for i in range(len(imgs[0]))
                ]
                records = p.predict_prepared(items)
                for task, k in keep.items():
                    s = np.array([r["tasks"][task]["ood_score"] for r in records])[k]
                    f = np.array([r["tasks"][task]["ood"] for r in records])[k]
                    scores[(precision, name, task)] = (s, f)
        print(f"{precision}: {time.time() - started:.0f} s", flush=True)
    a, b = args.precisions.split(",")
    results = {}
    for (prec, name, task), (s, f) in scores.items():
        if prec != a:
            continue
        s2, f2 = scores[(b, name, task)]
        results[f"{name}/{task}"] = {
            "cases": len(s),
            f"flagged_{a}": float(f.mean()),
            f"flagged_{b}": float(f2.mean()),
            "flag_agreement": float((f == f2).mean()),
            "spearman_score": float(spearmanr(s, s2).statistic),
            f"median_score_{a}": float(np.median(s)),
            f"median_score_{b}": float(np.median(s2)),
        }
    out = {
        "command": f"python benchmarks/ood_precision.py --export {args.export} --runtime {args.runtime} "
        + " ".join(f"--data {d}" for d in args.data)
        + "".join(f" --foreign {f}" for f in args.foreign)
        + f" -T {args.samples}",
        "density": json.loads(json.dumps({t: d for t, d in (card.files or {}).items() if t == "ood.npz"})),
        "note": "MC masks differ between the two runs (in-graph RNG): flag agreement includes MC noise",
        "results": results,
        "machine": machine_info(),
        "seconds": round(time.time() - started, 1),
    }
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
