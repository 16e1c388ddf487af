"""The package's exception types.

Every error a user can cause is a :class:`DrifaError`; the CLI maps each subclass
to a short message and a documented exit code (see ``drifa_edge.cli``).
"""

from __future__ import annotations

import difflib
import errno
import sys
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


class ProbabilityError(BadInputError):
    """An array given as class probabilities is not (logits, percentages, NaN, rows not summing to 1)."""


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


class UnknownChoiceError(ConfigError, UnsupportedBackendError):
    """An option names a runtime, precision or hint that does not exist (a typo such as
    ``--precision int4``): a bad option, exit 2, not a missing dependency. Still an
    :class:`UnsupportedBackendError` for code that catches that."""

    exit_code = 2


class FileSystemError(DrifaError, OSError):
    """A file or folder could not be read or written (exists, is a file or a folder where the
    other is needed, no permission, read-only, disk full); the message names the path."""

    exit_code = 10


_OS_FIXES = {
    errno.EEXIST: "it already exists and is not a folder; remove it or choose another path",
    errno.ENOTDIR: "a part of the path is a file, not a folder; choose another path",
    errno.EISDIR: "it is a folder where a file is needed; name a file",
    errno.EACCES: "permission denied; choose a location you can write to, or fix its permissions",
    errno.EPERM: "operation not permitted; choose a location you can write to, or fix its permissions",
    errno.EROFS: "the file system is read-only; choose another location",
    errno.ENOSPC: "no space left on the device; free some space or write elsewhere",
    errno.EDQUOT: "disk quota exceeded; free some space or write elsewhere",
    errno.ENOENT: "no such file or folder; check the path",
    errno.ENAMETOOLONG: "the file name is too long; choose a shorter path",
}


def file_system_error(e: OSError, what: str = "") -> FileSystemError:
    """One line for an operating-system error: the path, what went wrong and the fix."""
    path = e.filename if e.filename is not None else "?"
    other = f" -> {e.filename2}" if getattr(e, "filename2", None) else ""
    fix = _OS_FIXES.get(e.errno, e.strerror or str(e))
    label = f"{what} " if what else ""
    return FileSystemError(f"{label}{path}{other}: {fix} ({e.strerror or type(e).__name__})")


def missing_dependency(module: str, extra: str, cause: BaseException | None = None) -> MissingDependencyError:
    """Build the error for an optional import that failed.

    Called inside ``except ImportError`` (or given ``cause``), it tells "not installed" apart
    from "installed but fails to import" (a broken wheel, or a version clash such as
    onnxruntime 1.18 built for numpy 1 under numpy 2) and quotes the real import error with
    the installed versions of the package and numpy."""
    cause = cause if cause is not None else sys.exc_info()[1]
    top = module.split(">")[0].split("=")[0].split("<")[0].strip()
    if cause is None or (isinstance(cause, ModuleNotFoundError) and (cause.name or "").split(".")[0] == top):
        return MissingDependencyError(
            f"the optional dependency '{module}' is not installed; "
            f"install it with: pip install 'drifa-edge[{extra}]'"
        )
    versions = ", ".join(f"{name} {_version(name)}" for name in dict.fromkeys((top, "numpy")))
    message = str(cause).strip().splitlines()
    detail = " ".join(line.strip() for line in message[:3])[:400] or "no message"
    numpy_major = _version("numpy").split(".")[0]
    clash = ""
    if top in NUMPY2_MINIMUM and numpy_major.isdigit() and int(numpy_major) >= 2:
        need = NUMPY2_MINIMUM[top]
        if _older(_version(top), need):
            clash = (
                f" {top} {_version(top)} was built for numpy 1.x and cannot run under numpy {_version('numpy')} "
                f"(it needs {top} >= {need}): pip install --upgrade '{top}>={need}' (or pip install 'numpy<2')"
            )
    return MissingDependencyError(
        f"'{top}' is installed but fails to import ({type(cause).__name__}: {detail}); installed: {versions}."
        + (
            clash
            or " This is usually a version clash (e.g. a wheel built for numpy 1.x under numpy 2): "
            f"pip install --upgrade 'drifa-edge[{extra}]' to get versions that work together"
        )
    )


# The first release of each compiled dependency that runs under numpy 2 (their release notes);
# pyproject's lower bounds are these, so pip never resolves a pair that cannot import.
NUMPY2_MINIMUM = {"onnxruntime": "1.19", "torch": "2.3", "openvino": "2024.2", "scipy": "1.13"}


def _older(version: str, minimum: str) -> bool:
    def parts(v: str) -> tuple[int, ...]:
        out = []
        for piece in v.split(".")[:3]:
            digits = "".join(ch for ch in piece if ch.isdigit())
            out.append(int(digits) if digits else 0)
        return tuple(out)

    return parts(version) < parts(minimum)


def _version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def suggest(name: str, choices: Iterable[str]) -> str:
    """Return ' Did you mean ...?' for a close match among choices, else ''."""
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" Did you mean '{close[0]}'?" if close else ""


class UntrustedModelError(ArtifactError):
    """A checkpoint whose own card says it should not be used (e.g. a task at chance)."""

    exit_code = 5
