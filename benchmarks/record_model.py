"""Record a trained model by hash: what other measurements (gate, speed, OOD) refer to.

Reads a finished ``drifa-edge train`` folder and writes one JSON with the recipe,
seed, commit it was trained at, the sha256 of its model card and weights, per-task
test accuracy / balanced accuracy / macro-F1 / ECE with their 95 % intervals, the
chance test, training seconds per epoch, and (optionally) the fp32-vs-bf16 epoch
times of ``benchmarks/train_precision.py``.

    python benchmarks/record_model.py /work/runs/real-small-v2 --recipe train/real-small.toml \\
        --commit <sha the run was started at> --precision-json benchmarks/results/train_precision.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from drifa_edge.artifact.card import CARD_FILE, read_card, sha256_file

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "real_small_model.json"
HEADLINE = ("accuracy", "balanced_accuracy", "macro_f1", "ece")


def record(run: Path, recipe: str, commit: str, command: str, precision_json: Path | None) -> dict:
    card = read_card(run)  # verifies the weights' sha256 against the card
    training = card.training
    if training.get("status") != "finished":
        raise SystemExit(f"{run}: training status {training.get('status')!r}; record a finished run")
    tasks = {}
    for task, m in card.metrics["test"].items():
        tasks[task] = {"cases": m["cases"]}
        for key in HEADLINE:
            ci = m.get("ci", {}).get(key, {})
            tasks[task][key] = {
                "value": m[key],
                "ci95": [ci.get("low"), ci.get("high")],
                "method": ci.get("method"),
            }
        tasks[task]["nll"] = m["nll"]
    out = {
        "model": str(run),
        "command": command,
        "recipe": recipe,
        "seed": training["config"]["seed"],
        "commit": commit,
        "card_sha256": sha256_file(run / CARD_FILE),
        "files_sha256": dict(card.files),
        "training": {
            k: training.get(k)
            for k in (
                "epochs_run",
                "best_epoch",
                "best_val_loss",
                "stopped_early",
                "seconds_per_epoch",
                "precision",
                "class_balance",
                "batchnorm_statistics",
            )
        },
        "config": training["config"],
        "test": tasks,
        "val": {t: {k: m[k] for k in HEADLINE} for t, m in card.metrics["val"].items()},
        "chance": training.get("chance"),
        "evaluation": card.metrics.get("evaluation"),
        "temperature": card.temperature,
        "recorded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if precision_json is not None and precision_json.is_file():
        bench = json.loads(precision_json.read_text())
        out["seconds_per_epoch_fp32_vs_bf16"] = {
            "source": str(
                precision_json.relative_to(ROOT) if precision_json.is_relative_to(ROOT) else precision_json
            ),
            "seconds_per_epoch": bench["seconds_per_epoch"],
            "speedup_bf16_over_fp32": bench["speedup_bf16_over_fp32"],
        }
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path)
    p.add_argument("--recipe", default="train/real-small.toml")
    p.add_argument("--commit", required=True, help="the commit the training run was started at")
    p.add_argument("--command", default="", help="the training command as run")
    p.add_argument(
        "--precision-json", type=Path, default=ROOT / "benchmarks" / "results" / "train_precision.json"
    )
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    doc = record(args.run, args.recipe, args.commit, args.command, args.precision_json)
    args.out.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    print(
        json.dumps(
            {
                t: {k: round(v["value"], 3) for k, v in m.items() if isinstance(v, dict)}
                for t, m in doc["test"].items()
            }
        )
    )


if __name__ == "__main__":
    main()
