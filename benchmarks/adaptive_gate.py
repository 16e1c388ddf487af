"""Collect `drifa-edge check --adaptive` reports into one JSON with the CPU flags (issue 19, item 1).

Each report folder comes from a run such as

    nice -n 10 drifa-edge check EXPORT EXPORT --ref-runtime openvino --runtime openvino \\
        --data skin_isic9=... --data blood_pbc8=... --adaptive --error-rate 0.05 --out DIR

(reference: the FP32 export at fixed T = 30; candidate: the same build with adaptive T). Per
report: the verdict, the adaptive-T summary (mean / median / p90 draws, histogram, row ratio)
and per task every criterion's candidate value next to the null median (two fixed-T runs).

    python benchmarks/adaptive_gate.py DIR [DIR ...] --out benchmarks/results/adaptive_t_gate.json
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

from drifa_edge.runtimes.cpu import cpu_flags


def summary(folder: Path) -> dict:
    report = json.loads((folder / "report.json").read_text())
    meta = report["meta"]
    tasks = {}
    for name, task in report["tasks"].items():
        tasks[name] = {
            "cases": task["cases"],
            "changed_cases": len(task["changed"]),
            "changed_by_noise": task["changed_by_noise"],
            "referral_agreement": task["pair"]["referral_agreement"],
            "class_agreement": task["pair"]["agreement"],
            "criteria": {
                c["name"]: {
                    "candidate": c["value"],
                    "null_median": c["noise"],
                    "limit": c["threshold"],
                    "p_holm": c["p_adjusted"],
                    "passed": c["passed"],
                }
                for c in task["criteria"]
            },
        }
    return {
        "report": str(folder),
        "verdict": report["verdict"],
        "failures": report["failures"],
        "reference_runtime": meta.get("reference_runtime"),
        "candidate_runtime": meta.get("candidate_runtime"),
        "seconds": meta.get("seconds"),
        "adaptive": meta.get("adaptive"),
        "tasks": tasks,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("reports", nargs="+", type=Path)
    parser.add_argument("--command", action="append", default=[], help="the check command of each report")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    flags = sorted(cpu_flags())
    record = {
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "cpu_flags": [f for f in flags if f.startswith(("avx", "amx", "sse4", "fma"))],
        },
        "commands": args.command,
        "runs": [summary(folder) for folder in args.reports],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    for run in record["runs"]:
        a = run["adaptive"]
        print(
            run["report"],
            run["verdict"],
            f"mean draws {a['mean_samples']:.2f}",
            f"row ratio {a['row_ratio']:.2f}",
        )


if __name__ == "__main__":
    main()
