"""The package's exception types.

Every error a user can cause is a :class:`DrifaError`; the CLI maps each subclass
to a short message and a documented exit code (see ``drifa_edge.cli``).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

# Exit codes of the CLI: each exception type below carries its own (``exit_code``); 9 is
# a batch that finished with some cases failed (``drifa-edge predict``; their lines say why).
PARTIAL_FAILURE_EXIT = 9


class DrifaError(Exception):
    """Base class of every error drifa-edge raises on purpose."""

    exit_code = 1


class ConfigError(DrifaError, ValueError):
    """A configuration value or command-line option is invalid."""

    exit_code = 2


class BadInputError(DrifaError, ValueError):
    """An input file or array cannot be used (unreadable, wrong shape, NaN, ...)."""

    exit_code = 3


class MissingDependencyError(DrifaError, ImportError):
    """An optional dependency is not installed; the message names the extra."""

    exit_code = 4


class UnsupportedBackendError(DrifaError, ValueError):
    """A runtime, precision or device is unknown or cannot run here."""

    exit_code = 4


class ArtifactError(DrifaError):
    """A checkpoint or export folder is missing files or fails its hash check."""

    exit_code = 5


class ExportError(DrifaError):
    """Exporting or converting the model failed."""

    exit_code = 6


class ParityError(ExportError):
    """An exported graph disagrees with the PyTorch reference beyond tolerance."""

    exit_code = 7


class DriftExceededError(DrifaError):
    """A candidate build failed the accuracy/calibration/uncertainty drift gate."""

    exit_code = 8


def missing_dependency(module: str, extra: str) -> MissingDependencyError:
    """Build the error for an optional import that failed."""
    return MissingDependencyError(
        f"the optional dependency '{module}' is not installed; "
        f"install it with: pip install 'drifa-edge[{extra}]'"
    )


def suggest(name: str, choices: Iterable[str]) -> str:
    """Return ' Did you mean ...?' for a close match among choices, else ''."""
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" Did you mean '{close[0]}'?" if close else ""
