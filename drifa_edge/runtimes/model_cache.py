"""Where OpenVINO keeps compiled models between processes (its ``CACHE_DIR``), so that the first
call after a restart does not compile the graphs again.

On by default in ``predict`` (a per-user folder, :func:`default_cache_root`) and ``serve``
(``<storage root>/ov-cache``); ``--cache-dir none`` (``cache_dir = "none"`` in serve.toml)
turns it off. Inside the chosen folder each build gets its own sub-folder named after the
sha256 of the files it compiles (:func:`build_cache_dir`), so a new export never meets the
blobs of an old one and an old build's folder can be deleted by hand (OpenVINO itself
keys each blob by the graph, the device and the compile settings).
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

log = logging.getLogger(__name__)

OFF = ("none", "off")
AUTO = "auto"
CACHE_ENV = "DRIFA_EDGE_CACHE_DIR"  # overrides the per-user default folder


def default_cache_root(env: Mapping[str, str] | None = None, platform: str | None = None) -> Path:
    """The per-user cache folder for OpenVINO blobs: ``$DRIFA_EDGE_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/drifa-edge/ov`` (``~/.cache/drifa-edge/ov``) on Linux,
    ``~/Library/Caches/drifa-edge/ov`` on macOS, ``%LOCALAPPDATA%\\drifa-edge\\cache\\ov`` on
    Windows (the XDG / platformdirs conventions)."""
    env = os.environ if env is None else env
    platform = sys.platform if platform is None else platform
    if env.get(CACHE_ENV):
        return Path(env[CACHE_ENV]).expanduser()
    if platform == "darwin":
        return Path.home() / "Library" / "Caches" / "drifa-edge" / "ov"
    if platform.startswith("win") and env.get("LOCALAPPDATA"):
        return Path(env["LOCALAPPDATA"]) / "drifa-edge" / "cache" / "ov"
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "drifa-edge" / "ov"


def resolve_cache_dir(value: str | Path | None) -> Path | None:
    """``--cache-dir`` -> folder or None: None / "auto" -> :func:`default_cache_root`,
    "none" / "off" -> None (no cache), anything else -> that folder."""
    if value is None or str(value) == AUTO:
        return default_cache_root()
    if str(value).strip().lower() in OFF or not str(value).strip():
        return None
    return Path(value).expanduser()


def build_key(file_hashes: Mapping[str, str], files: Iterable[str]) -> str:
    """16 hex digits naming one build: the sha256 over the (path, sha256) of ``files`` as the
    model card lists them (a file the card does not list counts by its path alone)."""
    h = hashlib.sha256()
    for rel in sorted(files):
        h.update(f"{rel}\0{file_hashes.get(rel, '')}\n".encode())
    return h.hexdigest()[:16]


def build_cache_dir(root: str | Path, file_hashes: Mapping[str, str], files: Iterable[str]) -> Path | None:
    """``root/<build key>``, created (owner-only) if missing; None with a warning when it
    cannot be made (read-only home...): the runtime then compiles without a cache."""
    path = Path(root) / build_key(file_hashes, files)
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as e:
        log.warning("OpenVINO model cache off: cannot create %s (%s); pass --cache-dir DIR or none", path, e)
        return None
    return path
