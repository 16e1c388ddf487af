"""`drifa-edge explain`: Grad-CAM overlays per task for one case (PyTorch checkpoint)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from drifa_edge.cli.app import THREADS_HELP, app
from drifa_edge.cli.progress import Progress


@app.command()
def explain(
    checkpoint: Path = typer.Argument(..., help="checkpoint folder (from 'drifa-edge train')"),
    inputs: list[str] = typer.Option(..., "--input", "-i", help="TASK=PATH, once per task"),
    out: Path = typer.Option(..., "--out", "-o", help="folder for the PNG overlays"),
    target: list[str] = typer.Option([], "--target", help="TASK=CLASS to explain (default: predicted)"),
    layer: str = typer.Option("stage2", help="stage2 (stride 16, default) | stage3 (last block, stride 32)"),
    samples: int = typer.Option(0, "--samples", "-T", help="MC draws for a variance map (0: none)"),
    threads: int = typer.Option(None, "--threads", min=1, help=THREADS_HELP),
) -> None:
    """Grad-CAM (captum LayerGradCam) of each task's predicted class, overlaid on its input as PNG.
    Prints per task the class, its probability and the files as JSON."""
    from drifa_edge.artifact.card import read_card
    from drifa_edge.inference.gradcam import explain_case
    from drifa_edge.inference.manifest import parse_inputs
    from drifa_edge.runtimes.threads import use_threads

    use_threads(threads)

    case = parse_inputs(inputs, read_card(checkpoint).task_names)
    targets = dict(t.split("=", 1) for t in target)
    with Progress(f"Grad-CAM of {len(case.inputs)} input(s) with {checkpoint}"):
        result = explain_case(checkpoint, case.inputs, out, targets, layer, samples)
    print(json.dumps(result, indent=2))
