"""DRIFA-Net: its configuration (:mod:`.config`, no torch) and the network (:mod:`.drifa`, torch).

``from drifa_edge.model import DrifaNet, ModelConfig, TaskSpec``: the configuration classes
import without torch; ``DrifaNet`` and ``build_model`` load torch on first use
(install 'drifa-edge[torch]').
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from drifa_edge.model.config import ModelConfig, TaskSpec, dropout_shapes, paper_config

if TYPE_CHECKING:
    from drifa_edge.model.drifa import DrifaNet, build_model

__all__ = ["DrifaNet", "ModelConfig", "TaskSpec", "build_model", "dropout_shapes", "paper_config"]
_TORCH_NAMES = ("DrifaNet", "build_model")


def __getattr__(name: str) -> Any:
    if name in _TORCH_NAMES:
        from drifa_edge.model import drifa

        return getattr(drifa, name)
    raise AttributeError(f"module 'drifa_edge.model' has no attribute {name!r}")
