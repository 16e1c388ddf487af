"""`drifa-edge train`: train DRIFA-Net (or a K-member ensemble) on 2-4 labelled sets."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from drifa_edge.cli.app import app
from drifa_edge.errors import ConfigError


def _metrics_of(out: Path) -> dict:
    """Test metrics per task of a trained artifact (single model or ensemble)."""
    from drifa_edge.artifact.card import read_card
    from drifa_edge.artifact.ensemble import ENSEMBLE_FILE

    if (out / ENSEMBLE_FILE).is_file():
        return json.loads((out / ENSEMBLE_FILE).read_text()).get("metrics", {})
    return read_card(out, verify=False).metrics


def _samples(metrics: dict) -> str:
    ev = metrics.get("evaluation", {})
    if "members" in ev:
        return f"{ev['mc_samples_per_member']} x {ev['members']} members"
    return str(ev.get("mc_samples", "?"))


def print_result(out: Path, console: Console) -> None:
    from drifa_edge.training.evaluate import summary

    metrics = _metrics_of(out)
    table = Table(title=f"test split, MC dropout T={_samples(metrics)}")
    for col in ("task", "cases", "accuracy", "macro-F1", "NLL", "ECE"):
        table.add_column(col, justify="right" if col != "task" else "left")
    for task, m in summary(metrics).items():
        cases = metrics["test"][task].get("cases", "")
        table.add_row(
            task,
            str(cases),
            f"{m['accuracy']:.3f}",
            f"{m['macro_f1']:.3f}",
            f"{m['nll']:.3f}",
            f"{m['ece']:.3f}",
        )
    console.print(table)
    print(out)


@app.command()
def train(
    data: list[str] = typer.Option(
        None, "--data", help="NAME=PATH once per modality (2-4), or 'synthetic'; default: the recipe's data"
    ),
    out: Path = typer.Option(
        ..., "--out", help="output folder (checkpoint, or ensemble of member-k folders)"
    ),
    recipe: Path | None = typer.Option(None, "--recipe", help="training recipe TOML (see train/README.md)"),
    epochs: int | None = typer.Option(None, "--epochs", help="maximum epochs"),
    batch_size: int | None = typer.Option(None, "--batch-size", help="paired rows per batch"),
    image_size: int | None = typer.Option(None, "--image-size", help="input size, a multiple of 32"),
    width: float | None = typer.Option(None, "--width", help="channel width multiplier (paper: 1.0)"),
    lr: float | None = typer.Option(None, "--lr", help="Adam learning rate"),
    seed: int | None = typer.Option(None, "--seed", help="seed of splits, initialization, batches, masks"),
    ensemble: int | None = typer.Option(None, "--ensemble", help="K ensemble members (seeds seed..seed+K-1)"),
    pairing: str | None = typer.Option(None, "--pairing", help="index (authors') or case_id"),
    max_pairs: int | None = typer.Option(None, "--max-pairs", help="cap on training rows per epoch"),
    threads: int | None = typer.Option(None, "--threads", help="torch CPU threads"),
    resume: bool = typer.Option(False, "--resume", help="continue the run in --out from its last epoch"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars or per-epoch lines"),
) -> None:
    """Train DRIFA-Net with the authors' recipe; writes weights, model card and metrics to --out."""
    from drifa_edge.data.sources import load_datasets, parse_data_options
    from drifa_edge.training.config import load_config, read_recipe
    from drifa_edge.training.ensemble import train_ensemble

    overrides = {
        "epochs": epochs,
        "batch_size": batch_size,
        "image_size": image_size,
        "width": width,
        "lr": lr,
        "seed": seed,
        "ensemble": ensemble,
        "pairing": pairing,
        "max_train_pairs": max_pairs,
        "threads": threads,
    }
    cfg = load_config(recipe, overrides)
    if not data and recipe is not None:
        data = read_recipe(recipe).get("data")
    if not data:
        raise ConfigError(
            "--data: no data given; pass --data NAME=PATH once per modality, or --data synthetic"
        )
    data = list(data)
    options = parse_data_options(data)
    if options != [("synthetic", "")] and not 2 <= len(options) <= 4:
        raise ConfigError(
            f"--data: DRIFA-Net takes 2 to 4 modalities (one --data NAME=PATH each), got {len(options)}: "
            f"{', '.join(n for n, _ in options)}"
        )
    sets = load_datasets(data, seed=cfg.seed)
    result = train_ensemble(sets, cfg, out, resume=resume, progress=not quiet)
    print_result(result, Console())
