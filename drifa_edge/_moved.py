"""Old import paths kept for one release: a module that forwards to its new home and warns."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from typing import Any


def forward(old: str, *new: str) -> Callable[[str], Any]:
    """A module ``__getattr__`` for the old module ``old``: each name comes from the first
    module of ``new`` that has it, with a :class:`DeprecationWarning` naming the new path."""

    def __getattr__(name: str) -> Any:
        if not name.startswith("__"):
            for target in new:
                module = importlib.import_module(target)
                if hasattr(module, name):
                    warnings.warn(
                        f"{old}.{name} moved to {target}.{name}; "
                        "the old path will be removed in the next release",
                        DeprecationWarning,
                        stacklevel=2,
                    )
                    return getattr(module, name)
        raise AttributeError(f"module {old!r} has no attribute {name!r}")

    return __getattr__
