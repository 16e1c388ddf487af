"""`drifa-edge train`: train DRIFA-Net (or a K-member ensemble) on 2-4 labelled sets."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from drifa_edge.cli.app import THREADS_HELP, app
from drifa_edge.cli.progress import Progress
from drifa_edge.cli.tables import FORMAT_HELP, print_table, resolve_format
from drifa_edge.cli.text import require_folder
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


def _with_ci(m: dict, key: str) -> str:
    ci = m.get("ci", {}).get(key)
    return f"{m[key]:.3f}" if ci is None else f"{m[key]:.3f} [{ci['low']:.2f}, {ci['high']:.2f}]"


def _chance_reports(out: Path) -> dict[str, dict]:
    """{member folder: its card's training.chance section} of a model or an ensemble."""
    from drifa_edge.artifact.card import read_card
    from drifa_edge.artifact.ensemble import ENSEMBLE_FILE, resolve_members

    reports = {}
    for member in resolve_members(out):
        reports[str(member)] = read_card(member, verify=False).training.get("chance") or {}
    if (out / ENSEMBLE_FILE).is_file():
        reports[str(out)] = json.loads((out / ENSEMBLE_FILE).read_text()).get("chance") or {}
    return reports


def warn_if_at_chance(out: Path, console: Console) -> bool:
    """A loud warning for every task whose validation predictions are not better than chance
    (see drifa_edge.training.chance); True when any was flagged."""
    from rich.text import Text

    flagged = False
    for where, report in _chance_reports(out).items():
        for task in report.get("at_chance", []):
            t = report["tasks"][task]
            flagged = True
            console.print(
                Text(
                    f"WARNING: {where}: task {task!r} is AT CHANCE on the validation split "
                    f"({t['cases']} cases): accuracy {t['accuracy']:.3f} vs majority class "
                    f"{t['majority_rate']:.3f} (binomial p={t['p_accuracy']:.3g}), balanced accuracy "
                    f"{t['balanced_accuracy']:.3f} vs {t['chance_balanced_accuracy']:.3f} (permutation "
                    f"p={t['p_balanced_accuracy']:.3g}). This model has not learned this task; do not use "
                    "it. Train longer, check labels and data, or try --class-balance weights. "
                    "'drifa-edge export' refuses it without --force.",
                    style="bold red",
                ),
                soft_wrap=not console.is_terminal,  # one line in a log, grep-able
            )
    return flagged


def print_result(out: Path, console: Console, fmt: str = "auto") -> None:
    """The test table (``fmt``: auto, table, plain; json prints the test metrics), the at-chance
    warning on stderr, then the folder."""
    from drifa_edge.training.evaluate import summary

    metrics = _metrics_of(out)
    fmt = resolve_format(fmt, console)
    if fmt == "json":
        print(json.dumps({"out": str(out), "test": metrics.get("test", {})}, indent=2, default=str))
        warn_if_at_chance(out, Console(stderr=True))
        return
    table = Table(title=Text(f"test split, MC dropout T={_samples(metrics)}; [95% CI]"))
    for col in ("task", "cases", "accuracy", "balanced acc", "macro-F1", "NLL", "ECE"):
        table.add_column(col, justify="right" if col != "task" else "left")
    for task, m in summary(metrics).items():
        full = metrics["test"][task]
        table.add_row(
            Text(task),
            str(full.get("cases", "")),
            *(Text(_with_ci(full, k)) for k in ("accuracy", "balanced_accuracy", "macro_f1")),
            f"{m['nll']:.3f}",
            Text(_with_ci(full, "ece")),
        )
    print_table(table, fmt, console)  # auto: plain columns in a log
    warn_if_at_chance(out, Console(stderr=True))
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
    threads: int | None = typer.Option(None, "--threads", min=1, help=THREADS_HELP),
    class_balance: str | None = typer.Option(
        None,
        "--class-balance",
        help="none (default), weights (class-weighted loss, n / (C * n_c)) or sampler "
        "(class-balanced draws of each task's rows); recorded in the model card",
    ),
    precision: str | None = typer.Option(
        None,
        "--precision",
        help="auto (default: bf16 on CPUs with AMX, else fp32; AVX512-BF16 alone measured no faster), "
        "bf16 or fp32: the training forward pass; evaluation is always fp32",
    ),
    resume: bool = typer.Option(False, "--resume", help="continue the run in --out from its last epoch"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars or per-epoch lines"),
    fmt: str = typer.Option("auto", "--format", help=FORMAT_HELP + " (the test metrics)"),
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
        "class_balance": class_balance,
        "precision": precision,
    }
    require_folder(out)
    resolve_format(fmt, Console())  # a bad --format fails now (exit 2), not after training
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
    if quiet:
        result = train_ensemble(sets, cfg, out, resume=resume, progress=False)
    else:  # stage and epoch lines on stderr; in a log the running step repeats at least every ~10 s
        with Progress(f"training into {out}", spinner=False):
            result = train_ensemble(sets, cfg, out, resume=resume, progress=True)
    print_result(result, Console(), fmt)
