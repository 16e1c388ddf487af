"""Manifest cells that are URIs (``s3://``, ``gs://``, ``hdfs://``, ``file://``): read through
``pyarrow.fs`` inside the decode tasks, so a cluster can score files no node has on disk.

The local manifest reader treats every cell as a path; for ``drifa-edge score`` the URI
cells are read again here and carried beside the case. A decode task copies the object
to a temporary file with the same suffix (the readers go by it), decodes it like local
predict, then deletes the copy; the record's ``inputs`` and any error name the URI.
Credentials come from the environment of each node, as ``pyarrow.fs`` reads them
(e.g. ``AWS_*`` variables for S3); nothing is passed on the command line.
"""

from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path, PurePosixPath

from drifa_edge.errors import BadInputError, missing_dependency

URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_uri(cell: str) -> bool:
    return bool(URI.match(cell.strip()))


def manifest_uris(path: str | Path, tasks: list[str] | tuple[str, ...]) -> dict[str, dict[str, str]]:
    """case_id -> {task: uri} for the cells of a manifest that are URIs (the rest are paths).
    Call after ``read_manifest``, which has already checked the file's columns and ids."""
    out: dict[str, dict[str, str]] = {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        for row in csv.DictReader(f):
            cells = {t: (row.get(t) or "").strip() for t in tasks}
            uris = {t: c for t, c in cells.items() if is_uri(c)}
            if uris:
                out[(row.get("case_id") or "").strip()] = uris
    return out


def fetch(uri: str, folder: Path, name: str) -> Path:
    """Copy the object at ``uri`` to ``folder/name + its suffix``; BadInputError when it
    cannot be read (missing, no permission, unknown scheme), naming the URI."""
    try:
        import pyarrow.fs as pafs
    except ImportError as e:
        raise missing_dependency("pyarrow", "ray") from e
    target = folder / f"{name}{PurePosixPath(uri.split('?', 1)[0]).suffix.lower()}"
    try:
        fs, inner = pafs.FileSystem.from_uri(uri)
        with fs.open_input_stream(inner) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    except (OSError, ValueError) as e:  # pyarrow raises these for missing objects and bad URIs
        raise BadInputError(
            f"{uri}: cannot read it through pyarrow.fs ({e}); check the URI and the node's credentials"
        ) from e
    return target
