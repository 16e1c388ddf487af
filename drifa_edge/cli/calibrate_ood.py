"""`drifa-edge calibrate-ood`: fit the out-of-distribution density of an artifact."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from drifa_edge.cli.app import THREADS_HELP, app
from drifa_edge.cli.progress import Progress


@app.command("calibrate-ood")
def calibrate_ood(
    artifact: Path = typer.Argument(
        ..., help="checkpoint or export folder (one model, or an ensemble: every member is fitted)"
    ),
    data: list[str] = typer.Option(
        ..., "--data", help="labelled data, NAME=PATH once per task (the training recipe's data)"
    ),
    space: str = typer.Option("branch", help="embedding columns: branch (the task's own) | fused (all)"),
    score: str = typer.Option(
        "prefix+embedding",
        help="prefix+embedding (Mahalanobis of the prefix statistics + of the embedding, standardised "
        "on val; the default) | embedding (the embedding alone, drifa-edge-ood/1's score)",
    ),
    target_rate: float = typer.Option(
        0.05, "--target-rate", help="share of in-distribution validation cases flagged OOD"
    ),
    shrinkage: float = typer.Option(0.1, help="covariance shrinkage towards a scaled identity, [0, 1)"),
    samples: int = typer.Option(
        30, "--samples", "-T", help="MC samples averaged per case; use predict's T (the score depends on it)"
    ),
    limit: int = typer.Option(None, help="at most this many cases per split"),
    threshold_only: bool = typer.Option(
        False,
        "--threshold-only",
        help="keep the fitted density; refit only the threshold on every given case (a site's normal cases)",
    ),
    runtime: str = typer.Option("auto", help="auto | torch | onnxruntime | openvino"),
    seed: int = typer.Option(0, help="seed of the MC masks (torch)"),
    threads: int = typer.Option(None, "--threads", min=1, help=THREADS_HELP),
) -> None:
    """Fit per task Mahalanobis densities of the pooled prefix statistics and embedding on the
    'train' split, pick the threshold on 'val' for --target-rate, write ood.npz beside the
    weights (hashed in the card).

    Fit it on a checkpoint before exporting (the export copies it) or on an export folder.
    Prints the thresholds as JSON."""
    from drifa_edge.export.ood import OodConfig
    from drifa_edge.export.ood import calibrate_ood as run
    from drifa_edge.runtimes.base import RuntimeOptions

    cfg = OodConfig(
        space=space, score=score, target_rate=target_rate, shrinkage=shrinkage, samples=samples,
        limit=limit, threshold_only=threshold_only, seed=seed,
    )  # fmt: skip
    with Progress(f"fitting the OOD density of {artifact}"):
        fitted = run(artifact, data, cfg, runtime=runtime, options=RuntimeOptions(threads=threads))
    summaries = [
        {task: {"space": d.space, "threshold": d.threshold, "target_rate": d.target_rate, **d.fit}
         for task, d in densities.items()}
        for densities in fitted
    ]  # fmt: skip
    key = {"ood": summaries[0]} if len(summaries) == 1 else {"members": summaries}
    print(json.dumps({"artifact": str(artifact), **key}, indent=2))
