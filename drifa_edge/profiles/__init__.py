"""Profiles shipped inside the package, and the one TOML reader of drifa-edge.

Three kinds, each a folder of TOML files that travel in the wheel (read with
:mod:`importlib.resources`, so an installed package works without the repository):

- ``calibration``: drift policies for ``drifa-edge check --policy NAME``;
- ``export``: deployment target profiles for ``drifa-edge export --trt --target NAME``;
- ``train``: training recipes for ``drifa-edge train --recipe NAME``.

The package data is the single source of truth. The repository's top-level
``calibration/``, ``export/`` and ``train/`` folders are user-facing copies with
their READMEs (``tests/profiles/test_profiles.py`` keeps them byte-identical).
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drifa_edge.errors import ConfigError, missing_dependency

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable  # Python >= 3.11; only a type here

KINDS = ("calibration", "export", "train")


def toml_loads(text: str) -> dict[str, Any]:
    """Parse TOML text (``tomllib``; the ``tomli`` backport on Python 3.10).

    Raises ``ValueError`` (``TOMLDecodeError``) on invalid TOML."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10: tomli is a dependency there
        try:
            import tomli as tomllib
        except ImportError as e:
            raise missing_dependency("tomli", "all") from e
    return tomllib.loads(text)


def _folder(kind: str) -> Traversable:
    if kind not in KINDS:
        raise ConfigError(f"unknown profile kind {kind!r}; one of {KINDS}")
    return resources.files(__name__) / kind


def profile_names(kind: str) -> list[str]:
    """Names of the shipped profiles of ``kind`` (file stems), sorted."""
    return sorted(p.name[: -len(".toml")] for p in _folder(kind).iterdir() if p.name.endswith(".toml"))


def profile_file(kind: str, name: str) -> Traversable | None:
    """The shipped file of profile ``name``, or None when there is no such profile."""
    if not name or "/" in name or "\\" in name or name.endswith(".toml"):
        return None
    path = _folder(kind) / f"{name}.toml"
    return path if path.is_file() else None


def read_toml(path: str | Path | Traversable) -> dict[str, Any]:
    """Read one TOML file; :class:`ConfigError` naming the file when it is not valid TOML."""
    try:
        return toml_loads(path.read_text(encoding="utf-8"))
    except ValueError as e:  # tomllib.TOMLDecodeError is a ValueError
        raise ConfigError(f"{path}: not valid TOML ({e})") from e
