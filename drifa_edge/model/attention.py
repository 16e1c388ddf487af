"""The paper's attention modules, layer for layer after the authors' Keras code.

- MFA (multi-branch fusion attention, ``DeeperAttentionLayer1`` in the notebook)
  refines one branch: HIFA (hierarchical, global) + CLIA (channel-wise, local).
- MIFA (multimodal information fusion attention, ``DeeperAttentionLayer``) fuses
  the branches: MGIFA (global) + MLIFA (local); one shared attention map, a
  learned per-branch scale alpha.

The notebook's MIFA takes exactly two branches; it is generalised here to M
branches by summing over all of them, which is what its ``Add`` layers do for two.
"""

from __future__ import annotations

import torch
from torch import nn


def _gap(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=(2, 3))  # (B, C)


def _gmp(x: torch.Tensor) -> torch.Tensor:
    return x.amax(dim=(2, 3))  # (B, C)


def _gmin(x: torch.Tensor) -> torch.Tensor:
    return x.amin(dim=(2, 3))  # (B, C)


class HIFA(nn.Module):
    """Hierarchical information fusion attention: a global (B, C) descriptor.

    Four chained sigmoid 1x1 convs; the pooled outputs alternate GAP / GMP; pairs
    are summed, the two sums concatenated and passed through a sigmoid dense layer.
    As in the notebook, the third conv takes the *sum* of the first two maps.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 1)
        self.conv2 = nn.Conv2d(channels, channels, 1)
        self.conv3 = nn.Conv2d(channels, channels, 1)
        self.conv4 = nn.Conv2d(channels, channels, 1)
        self.dense = nn.Linear(2 * channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a1 = torch.sigmoid(self.conv1(x))  # (B, C, H, W)
        a2 = torch.sigmoid(self.conv2(a1))
        a3 = torch.sigmoid(self.conv3(a1 + a2))
        a4 = torch.sigmoid(self.conv4(a3))
        pooled = torch.cat([_gap(a1) + _gmp(a2), _gap(a3) + _gmp(a4)], dim=1)  # (B, 2C)
        return torch.sigmoid(self.dense(pooled))  # (B, C)


class CLIA(nn.Module):
    """Channel-wise local information attention: sigmoid conv -> spatial mean ->
    sigmoid conv, the two summed (B, C)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 1)
        self.conv2 = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        l1 = torch.sigmoid(self.conv1(x)).mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
        l2 = torch.sigmoid(self.conv2(l1))  # spatial mean of a 1x1 map is itself
        return (l1 + l2).flatten(1)  # (B, C)


class MFA(nn.Module):
    """x * sigmoid(g * HIFA(x) + l * CLIA(x)) * alpha (g scalar, l and alpha per channel)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.hifa = HIFA(channels)
        self.clia = CLIA(channels)
        self.global_scale = nn.Parameter(torch.ones(1))
        self.local_scale = nn.Parameter(torch.ones(channels))
        self.alpha = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        att = torch.sigmoid(self.global_scale * self.hifa(x) + self.local_scale * self.clia(x))  # (B, C)
        return x * (att * self.alpha)[:, :, None, None]


class MGIFA(nn.Module):
    """Multimodal global attention: min/avg/max pools summed across modalities,
    each through one shared sigmoid dense layer, the three results summed."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.dense = nn.Linear(channels, channels)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        pooled_min = sum(_gmin(x) for x in xs)
        pooled_avg = sum(_gap(x) for x in xs)
        pooled_max = sum(_gmp(x) for x in xs)
        return sum(torch.sigmoid(self.dense(p)) for p in (pooled_min, pooled_avg, pooled_max))  # (B, C)


class MLIFA(nn.Module):
    """Multimodal local attention: a sigmoid 1x1 conv per modality, spatial
    min/avg/max of each, all summed (B, C)."""

    def __init__(self, channels: int, modalities: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(channels, channels, 1) for _ in range(modalities))

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        total = 0
        for conv, x in zip(self.convs, xs, strict=True):
            a = torch.sigmoid(conv(x))
            total = total + _gmin(a) + _gap(a) + _gmp(a)
        return total


class MIFA(nn.Module):
    """Fuses M branches: shared sigmoid(g * MGIFA + l * MLIFA), per-branch alpha."""

    def __init__(self, channels: int, modalities: int) -> None:
        super().__init__()
        self.mgifa = MGIFA(channels)
        self.mlifa = MLIFA(channels, modalities)
        self.global_scale = nn.Parameter(torch.ones(1))
        self.local_scale = nn.Parameter(torch.ones(channels))
        self.alphas = nn.ParameterList(nn.Parameter(torch.ones(channels)) for _ in range(modalities))

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        att = torch.sigmoid(self.global_scale * self.mgifa(xs) + self.local_scale * self.mlifa(xs))  # (B, C)
        return [x * (att * a)[:, :, None, None] for x, a in zip(xs, self.alphas, strict=True)]
