"""Monte Carlo dropout as an explicit random mask.

``torch.nn.Dropout`` is tied to ``module.train()`` and exporters delete it; ONNX
``Dropout`` in training mode is rejected by OpenVINO and TensorRT. Here dropout is
``x * (u >= p) / (1 - p)`` with ``u`` uniform in [0, 1): it exports as
RandomUniformLike -> GreaterOrEqual -> Cast -> Mul, which every runtime executes.

Modes (independent of ``train()``/``eval()``, so BatchNorm can stay in eval):
- ``"mc"``: a fresh mask on every call (from ``generator`` when one is set);
- ``"off"``: identity (deterministic inference);
- ``"external"``: the uniforms are supplied from outside (``uniform``), so two
  implementations can be compared under identical masks.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

MODES = ("mc", "off", "external")


class MCDropout(nn.Module):
    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = float(p)
        self.mode = "mc"
        self.generator: torch.Generator | None = None
        self.uniform: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "off" or self.p == 0.0:
            return x
        if self.mode == "external":
            if self.uniform is None or self.uniform.shape != x.shape:
                got = None if self.uniform is None else tuple(self.uniform.shape)
                raise RuntimeError(f"external dropout needs a uniform of shape {tuple(x.shape)}, got {got}")
            u = self.uniform
        elif self.generator is not None:
            u = torch.rand(x.shape, generator=self.generator, dtype=x.dtype).to(x.device)
        else:
            u = torch.rand_like(x)  # exports as ONNX RandomUniformLike
        keep = (u >= self.p).to(x.dtype)
        return x * keep * (1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}, mode={self.mode}"


def dropouts(model: nn.Module) -> Iterator[MCDropout]:
    """The model's MC dropout layers in forward order."""
    return (m for m in model.modules() if isinstance(m, MCDropout))


def set_dropout_mode(model: nn.Module, mode: str, seed: int | None = None) -> None:
    """Switch every MC dropout of ``model``; a seed makes ``"mc"`` masks repeatable."""
    if mode not in MODES:
        raise ValueError(f"dropout mode must be one of {MODES}, got {mode!r}")
    generator = None
    if seed is not None:
        generator = torch.Generator().manual_seed(int(seed))
    for m in dropouts(model):
        m.mode = mode
        m.generator = generator
        m.uniform = None
