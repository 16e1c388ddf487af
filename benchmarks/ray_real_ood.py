"""Real data through `drifa-edge score` (Ray Data) against local `predict`, OOD fields included.

A consistency check, not a metric: the real-data model with an OOD density (``ood.npz``,
e.g. a copy of ``/work/runs/real-small-v2`` after ``drifa-edge calibrate-ood``), 24 cases
pairing a skin_isic9 test image with a blood_pbc8 image, and 8 cases sending a pap-smear crop
(pap_smear_cric6) to the blood task; picked with seed 0. Both commands run as subprocesses
with the same T, seed, batches (8) and one runtime thread; the JSON says whether the records
are identical (``worker`` aside) and how many cases each task flagged OOD per group.

    nice -n 10 python benchmarks/ray_real_ood.py --artifact /work/runs/ray2-real-model
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "ray_real_ood.json"


def manifest(data: Path, path: Path) -> Path:
    skin = sorted((data / "skin_isic9" / "test").rglob("*.jpg"))
    blood = sorted((data / "blood_pbc8").rglob("*.jpg"))
    pap = sorted((data / "pap_smear_cric6").rglob("*.png"))
    rng = random.Random(0)
    skin, blood, pap = rng.sample(skin, 32), rng.sample(blood, 24), rng.sample(pap, 8)
    rows = [(f"in{i}", skin[i], blood[i]) for i in range(24)]
    rows += [(f"pap{i}", skin[24 + i], pap[i]) for i in range(8)]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case_id", "skin_isic9", "blood_pbc8"])
        w.writerows(rows)
    return path


def run(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return round(time.perf_counter() - t0, 1)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--artifact", type=Path, required=True)
    p.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ.get("DRIFA_SHARED_DATA", REPO.parent / "shared" / "data")),
    )
    p.add_argument("--samples", type=int, default=30)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    cli = [sys.executable, "-m", "drifa_edge"]
    with tempfile.TemporaryDirectory(prefix="drifa-rro-", dir="/tmp") as tmp:
        work = Path(tmp)
        cases = manifest(args.data, work / "cases.csv")
        common = ["--manifest", str(cases), "-T", str(args.samples), "--threads", "1", "--batch-size", "8"]
        local_s = run([*cli, "predict", str(args.artifact), *common, "--out", str(work / "local.jsonl")])
        ray_s = run([*cli, "score", str(args.artifact), *common, "--out", str(work / "ray.jsonl"),
                     "--decode-block", "8", "--actors", "2", "--cpus-per-actor", "0.75", "--decode-cpus", "0.25",
                     "--num-cpus", "2", "--object-store-mb", "128", "--temp-dir", str(work / "ray")])  # fmt: skip
        local = [json.loads(line) for line in (work / "local.jsonl").read_text().splitlines()]
        ray = [json.loads(line) for line in (work / "ray.jsonl").read_text().splitlines()]
    identical = [{k: v for k, v in r.items() if k != "worker"} for r in ray] == local
    groups = {}
    for kind, label in (("in", "in-distribution pairs"), ("pap", "pap smear sent to blood_pbc8")):
        rs = [r for r in ray if r["case_id"].startswith(kind)]
        groups[label] = {
            task: {
                "cases": len(rs),
                "flagged_ood": sum(bool(r["tasks"][task]["ood"]) for r in rs),
                "referred_reason_ood": sum(
                    (r["tasks"][task]["referral"] or {}).get("reason") == "ood" for r in rs
                ),
                "median_ood_score": sorted(r["tasks"][task]["ood_score"] for r in rs)[len(rs) // 2],
                "ood_threshold": rs[0]["tasks"][task]["ood_threshold"],
            }
            for task in ("skin_isic9", "blood_pbc8")
        }
    result = {
        "benchmark": "ray_real_ood",
        "command": "nice -n 10 python benchmarks/ray_real_ood.py " + " ".join(argv or sys.argv[1:]),
        "artifact": str(args.artifact),
        "model_sha256": ray[0]["model_sha256"],
        "samples": args.samples,
        "cases": len(ray),
        "statuses": sorted({r["status"] for r in ray}),
        "ray_records_identical_to_local_predict": identical,
        "actor_processes": len({r["worker"]["pid"] for r in ray}),
        "wall_s": {"local_predict": local_s, "ray_score_with_ray_start": ray_s},
        "groups": groups,
        "note": "a consistency check of the Ray path on real data; OOD metrics are benchmarks/ood_referral.py's",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
