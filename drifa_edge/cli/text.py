"""What every command shares for printing user text and checking output paths.

User and library text (case ids, paths, task and class names, error messages, install hints
such as ``pip install 'drifa-edge[onnx]'``) is never read as Rich markup: :func:`plain`
escapes it, so ``[bold]`` prints as typed and a stray ``[/x]`` cannot crash a command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.markup import escape

from drifa_edge.errors import FileSystemError, UnknownChoiceError, suggest


def plain(value: Any) -> str:
    """``value`` as text that Rich prints literally (markup escaped)."""
    return escape(str(value))


def require_folder(path: Path | None, option: str = "--out") -> None:
    """Refuse an output folder that exists as something else, before any work is done."""
    if path is None:
        return
    if path.exists() and not path.is_dir():
        raise FileSystemError(
            f"{option} {path}: is a file, a folder is needed; choose another {option} or remove it"
        )
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise FileSystemError(
                    f"{option} {path}: {parent} is a file, not a folder; choose another {option}"
                )
            break


def require_file(path: Path | None, option: str = "--out") -> None:
    """Refuse an output file path that is a folder (or lies under a file), before any work is done."""
    if path is None:
        return
    if path.is_dir():
        raise FileSystemError(
            f"{option} {path}: is a folder, a file is needed; name a file, e.g. {path / 'preds.jsonl'}"
        )
    require_folder(path.parent, option)


def require_choice(option: str, value: str | None, choices: tuple[str, ...] | list[str]) -> None:
    """Refuse an option value outside ``choices`` (exit 2) before any file is read."""
    if value is not None and value not in choices:
        raise UnknownChoiceError(
            f"{option} {value!r} is not one of {', '.join(choices)}" + suggest(value, choices)
        )
