"""Seconds per training epoch, fp32 against bf16 autocast, on one recipe, in one run.

Both models start from the same seeded initialization and see the same batches,
flips and dropout seeds; epochs alternate (fp32, bf16, then bf16, fp32, ...) so
load from other processes hits both alike. Per epoch the timed part is what
``drifa-edge train`` does: the training pass, the BatchNorm recomputation and the
validation pass (the last two always fp32); the training pass alone is reported
too. The train/val loss curves of both are written side by side: bf16 should
follow fp32 within run-to-run noise. Whether final accuracy stays within the
spread of several seeds is a longer benchmark, not this one.

    nice python benchmarks/train_precision.py --recipe train/real-small.toml --epochs 2 --threads 1
    python benchmarks/train_precision.py --quick --out /tmp/x.json     # synthetic smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from drifa_edge.runtimes.cpu import cpu_summary as cpu_record
from drifa_edge.training.batchnorm import recompute_bn_statistics
from drifa_edge.training.config import TrainConfig, load_config, read_recipe
from drifa_edge.training.data import prepare_data
from drifa_edge.training.loop import EVAL_BATCH, _build, build_card, epoch_seed, train_epoch, validate
from drifa_edge.training.precision import cpu_flags, native_bf16

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "train_precision.json"


def resolve_data(values: list[str]) -> list[str]:
    """Recipe paths are relative to the project root; a worktree elsewhere falls back on
    $DRIFA_SHARED_DATA/<folder name>."""
    out = []
    for value in values:
        name, _, path = value.partition("=")
        p = Path(path) if Path(path).is_absolute() else ROOT / path
        if not p.exists() and os.environ.get("DRIFA_SHARED_DATA"):
            p = Path(os.environ["DRIFA_SHARED_DATA"]) / Path(path).name
        out.append(f"{name}={p.resolve()}")
    return out


def cpu_summary() -> dict:
    """:func:`drifa_edge.runtimes.cpu.cpu_summary` plus what this script also records."""
    return {
        **cpu_record(),
        "native_bf16": native_bf16(cpu_flags()),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def commit() -> str | None:
    try:
        return subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def timed_epoch(model, optimizer, data, cfg: TrainConfig, epoch: int, precision: str) -> dict:
    weights = cfg.loss_weights(len(data.names))
    torch.manual_seed(epoch_seed(cfg.seed, epoch))
    started = time.perf_counter()
    train_loss = train_epoch(model, optimizer, data, epoch, weights, None, precision)
    trained = time.perf_counter()
    recompute_bn_statistics(model, data.bn_batches(EVAL_BATCH), channels_last=cfg.channels_last)
    val = validate(model, data, weights)
    done = time.perf_counter()
    return {
        "precision": precision,
        "epoch": epoch + 1,
        "seconds": round(done - started, 3),
        "train_seconds": round(trained - started, 3),
        "train_loss": train_loss,
        "val_loss": val["loss"],
        "val": val["tasks"],
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", type=Path, default=ROOT / "train" / "real-small.toml")
    p.add_argument("--data", action="append", help="NAME=PATH (default: the recipe's data)")
    p.add_argument("--epochs", type=int, default=2, help="epochs per precision")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="synthetic data, tiny model (smoke test)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)

    from drifa_edge.data.sources import load_datasets

    torch.set_num_threads(args.threads)
    started_at = commit()  # the code that runs, not what HEAD is when the run ends
    load_before = os.getloadavg()
    if args.quick:
        cfg = TrainConfig(image_size=32, width=0.125, batch_size=16, threads=args.threads, mc_samples=2)
        data_values = ["synthetic"]
    else:
        cfg = load_config(args.recipe, {"threads": args.threads})
        data_values = resolve_data(args.data or read_recipe(args.recipe)["data"])
    sets = load_datasets(data_values, seed=cfg.seed)
    t = time.perf_counter()
    data = prepare_data(sets, cfg)
    prepare_seconds = time.perf_counter() - t
    card = build_card(data, cfg)
    runs = {}
    for precision in ("fp32", "bf16"):
        model, optimizer, _ = _build(card, cfg)  # same seed: identical initial weights
        runs[precision] = (model, optimizer)
    rows = []
    for epoch in range(args.epochs):
        order = ("fp32", "bf16") if epoch % 2 == 0 else ("bf16", "fp32")
        for precision in order:
            row = timed_epoch(*runs[precision], data, cfg, epoch, precision)
            rows.append(row)
            print(
                json.dumps({k: row[k] for k in ("precision", "epoch", "seconds", "train_loss", "val_loss")}),
                file=sys.stderr,
            )
    median = {
        prec: statistics.median(r["seconds"] for r in rows if r["precision"] == prec)
        for prec in ("fp32", "bf16")
    }
    median_train = {
        prec: statistics.median(r["train_seconds"] for r in rows if r["precision"] == prec)
        for prec in ("fp32", "bf16")
    }
    result = {
        "benchmark": "train_precision",
        "command": "python benchmarks/train_precision.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "commit": started_at,
        "load_average": {
            "start": [round(x, 2) for x in load_before],
            "end": [round(x, 2) for x in os.getloadavg()],
        },
        "recipe": None
        if args.quick
        else str(
            args.recipe.relative_to(ROOT)
            if args.recipe.is_absolute() and ROOT in args.recipe.parents
            else args.recipe
        ),
        "data": data_values,
        "config": cfg.to_dict(),
        "threads": args.threads,
        "epochs_per_precision": args.epochs,
        "prepare_seconds": round(prepare_seconds, 1),
        "seconds_per_epoch": {k: round(v, 2) for k, v in median.items()},
        "train_pass_seconds_per_epoch": {k: round(v, 2) for k, v in median_train.items()},
        "speedup_bf16_over_fp32": round(median["fp32"] / median["bf16"], 3),
        "train_pass_speedup_bf16_over_fp32": round(median_train["fp32"] / median_train["bf16"], 3),
        "rows": rows,
        "cpu": cpu_summary(),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "note": "medians over epochs; epochs alternate fp32/bf16 in one process; machine shared "
        "(2 cores, other jobs running): compare the ratio, not the absolute seconds",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("seconds_per_epoch", "speedup_bf16_over_fp32")}))
    return result


if __name__ == "__main__":
    main()
