"""The Typer application object shared by the command modules."""

import typer
from typer.core import TyperOption

# Typer (0.2x) prints a value type beside every option in --help, "<bool>" beside flags such as
# --overwrite that take no value; a newcomer reads it as "--overwrite <bool>". Flags show none.
_display_type_rich = TyperOption.display_type_rich


def _option_type(self: TyperOption, ctx) -> str | None:
    return None if self.is_flag else _display_type_rich(self, ctx)


TyperOption.display_type_rich = _option_type  # type: ignore[method-assign]

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
