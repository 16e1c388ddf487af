"""One way to write a file that is either complete or absent: write a temporary file
beside it, fsync it, rename it over the target, fsync the folder.

Every writer of an artifact (model card, weights, ensemble manifest, CSV views, reports)
goes through :func:`atomic_write` or :func:`atomic_replace`, so a crash or a full disk
never leaves a half-written file that a later run would trust.
"""

from __future__ import annotations

import os
from pathlib import Path


def atomic_write(path: str | Path, data: str | bytes) -> Path:
    """Write ``data`` (text as UTF-8, newlines untranslated) to ``path`` atomically; returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    fsync_dir(path.parent)
    return path


def temporary_path(path: str | Path) -> Path:
    """The temporary sibling a writer that needs a file name (safetensors, ONNX) writes first."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def atomic_replace(tmp: str | Path, path: str | Path) -> Path:
    """Finish a write made to ``tmp`` by another library: fsync it, rename it to ``path``."""
    tmp, path = Path(tmp), Path(path)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)
    return path


def fsync_dir(folder: str | Path) -> None:
    """Make a created or renamed file's directory entry durable (POSIX; a no-op elsewhere)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
