"""Stem and residual RRA block (``RGSA`` in the authors' notebook)."""

from __future__ import annotations

import torch
from torch import nn

from drifa_edge.model.attention import MFA


def _bn(channels: int, eps: float, momentum: float) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=eps, momentum=momentum)


class Stem(nn.Module):
    """7x7/2 conv -> MFA -> BN -> ReLU -> 3x3/2 max-pool.

    Keras 'same' padding pads asymmetrically for stride 2 (one more row at the
    bottom/right); symmetric padding is used here, same output size.
    """

    def __init__(self, in_channels: int, width: int, eps: float, momentum: float) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, width, 7, stride=2, padding=3)
        self.mfa = MFA(width)
        self.bn = _bn(width, eps, momentum)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(torch.relu(self.bn(self.mfa(self.conv(x)))))  # (B, W, H/4, W/4)


class RRA(nn.Module):
    """Residual block: [3x3 conv -> MFA -> BN -> ReLU] -> [3x3 conv -> MFA -> BN] + shortcut -> ReLU.

    The shortcut is a 1x1 conv + BN when the stride or the width changes
    (the notebook's ``use_projection``). Convs keep their bias, as in Keras.
    """

    def __init__(self, cin: int, cout: int, stride: int, eps: float, momentum: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1)
        self.mfa1 = MFA(cout)
        self.bn1 = _bn(cout, eps, momentum)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.mfa2 = MFA(cout)
        self.bn2 = _bn(cout, eps, momentum)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride), _bn(cout, eps, momentum))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.mfa1(self.conv1(x))))
        y = self.bn2(self.mfa2(self.conv2(y)))
        return torch.relu(y + self.shortcut(x))
