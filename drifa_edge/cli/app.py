"""The Typer application object shared by the command modules."""

import typer

app = typer.Typer(
    name="drifa-edge",
    help="Uncertainty-aware DRIFA-Net from training to the scanner: train, export (ONNX, OpenVINO, "
    "TensorRT) with MC dropout kept, INT8, drift check against FP32, predict, bench.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="log diagnostics to stderr"),
) -> None:
    import logging

    if verbose:
        logging.getLogger("drifa_edge").setLevel(logging.INFO)


# --threads of every command (drifa_edge.runtimes.threads: the default leaves busy cores alone)
THREADS_HELP = (
    "CPU threads of the runtime / torch (default: the CPUs this process may use minus those other "
    "processes keep busy)"
)
