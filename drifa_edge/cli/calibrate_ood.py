"""`drifa-edge calibrate-ood`: fit the out-of-distribution density of an artifact."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from drifa_edge.cli.app import THREADS_HELP, app
from drifa_edge.cli.progress import Progress


@app.command("calibrate-ood")
def calibrate_ood(
    artifact: Path = typer.Argument(..., help="checkpoint folder or export folder (one model)"),
    data: list[str] = typer.Option(
        ..., "--data", help="labelled data, NAME=PATH once per task (the training recipe's data)"
    ),
    space: str = typer.Option("branch", help="feature space: branch (the task's own columns) | fused"),
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
    """Fit per task a Mahalanobis density of the pooled features on the 'train' split, pick the
    threshold on 'val' for --target-rate, write ood.npz beside the weights (hashed in the card).

    Fit it on a checkpoint before exporting (the export copies it) or on an export folder.
    Prints the thresholds as JSON."""
    from drifa_edge.export.ood import OodConfig
    from drifa_edge.export.ood import calibrate_ood as run
    from drifa_edge.runtimes.base import RuntimeOptions

    cfg = OodConfig(space, target_rate, shrinkage, samples, limit, threshold_only, seed)
    with Progress(f"fitting the OOD density of {artifact}"):
        densities = run(artifact, data, cfg, runtime=runtime, options=RuntimeOptions(threads=threads))
    summary = {
        task: {"space": d.space, "threshold": d.threshold, "target_rate": d.target_rate, **d.fit}
        for task, d in densities.items()
    }
    print(json.dumps({"artifact": str(artifact), "ood": summary}, indent=2))
