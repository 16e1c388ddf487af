"""Command line: a thin layer over the library; one module per command.

Exit codes: 0 success; 1 unexpected error; 2 bad option or configuration;
3 bad input file; 4 missing dependency or unsupported runtime; 5 artifact
missing or tampered; 6 export failed; 7 parity check failed; 8 drift gate
failed; 9 some cases of a batch failed (the others were written); 10 a file or
folder could not be read or written (exists, not a folder, no permission, disk
full: the message names the path).
"""

from __future__ import annotations

import logging
import sys

from rich.console import Console

from drifa_edge.cli import bench as _bench  # noqa: E402,F401
from drifa_edge.cli import calibrate_ood as _calibrate_ood  # noqa: E402,F401
from drifa_edge.cli import check as _check  # noqa: E402,F401
from drifa_edge.cli import demo as _demo  # noqa: E402,F401
from drifa_edge.cli import explain as _explain  # noqa: E402,F401
from drifa_edge.cli import export as _export  # noqa: E402,F401

# Each module registers its command on `app`.
from drifa_edge.cli import info as _info  # noqa: E402,F401
from drifa_edge.cli import predict as _predict  # noqa: E402,F401
from drifa_edge.cli import score as _score  # noqa: E402,F401
from drifa_edge.cli import serve as _serve  # noqa: E402,F401
from drifa_edge.cli import train as _train  # noqa: E402,F401
from drifa_edge.cli.app import app
from drifa_edge.errors import PARTIAL_FAILURE_EXIT, DrifaError, file_system_error
from drifa_edge.runtimes.threads import apply_wait_policy

__all__ = ["PARTIAL_FAILURE_EXIT", "app", "main"]


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    apply_wait_policy()  # before any command imports torch (OpenMP reads it then)
    try:
        app()  # standalone: click handles usage errors (exit 2) and Ctrl-C itself
    except DrifaError as e:
        _fail(e)
    except OSError as e:  # any file or folder a command could not read or write
        _fail(file_system_error(e))


def _fail(e: DrifaError) -> None:
    from rich.text import Text

    # soft_wrap: one line whatever the terminal width, so scripts and logs keep the whole message
    Console(stderr=True, soft_wrap=True).print(
        Text.assemble(("error: ", "bold red"), str(e)), highlight=False
    )
    sys.exit(e.exit_code)
