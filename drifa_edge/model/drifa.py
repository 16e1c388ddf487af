"""DRIFA-Net: one ResNet-18-like branch per modality, MFA inside every branch,
MIFA across branches after every RRA block position, MC dropout, one head per task.

Layer order follows the authors' notebook (``residual_GLC_branch1``); where it
differs from the paper's prose the code wins:
- MC dropout + MFA follow each RRA block of the 64/128/256 stages only; the first
  512 block is followed by an MFA without dropout, the last by nothing.
- A last MC dropout sits after the concatenation of the branches, before the GAP.

The graph is split at the first dropout: :meth:`forward_prefix` (stems and the
first RRA block) is deterministic and runs once per case; :meth:`forward_suffix`
is stochastic and runs on the prefix output tiled T times.
"""

from __future__ import annotations

import torch
from torch import nn

from drifa_edge.model.attention import MFA, MIFA
from drifa_edge.model.blocks import RRA, Stem
from drifa_edge.model.config import ModelConfig
from drifa_edge.model.drifa_layout import BLOCK_LAYOUT
from drifa_edge.model.dropout import MCDropout


class Branch(nn.Module):
    """The layers of one modality (everything but the cross-modal MIFA)."""

    def __init__(self, in_channels: int, cfg: ModelConfig) -> None:
        super().__init__()
        widths = cfg.stage_widths
        eps, mom = cfg.bn_eps, cfg.bn_momentum
        self.stem = Stem(in_channels, widths[0], eps, mom)
        blocks, drops, mfas = [], [], []
        cin = widths[0]
        for stage, stride, has_drop, has_mfa in BLOCK_LAYOUT:
            cout = widths[stage]
            blocks.append(RRA(cin, cout, stride, eps, mom))
            drops.append(MCDropout(cfg.dropout) if has_drop else nn.Identity())
            mfas.append(MFA(cout) if has_mfa else nn.Identity())
            cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.drops = nn.ModuleList(drops)
        self.mfas = nn.ModuleList(mfas)

    def after_block(self, i: int, x: torch.Tensor) -> torch.Tensor:
        return self.mfas[i](self.drops[i](x))


class DrifaNet(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        m = len(cfg.tasks)
        widths = cfg.stage_widths
        self.branches = nn.ModuleList(Branch(t.channels, cfg) for t in cfg.tasks)
        self.mifas = nn.ModuleList(MIFA(widths[stage], m) for stage, *_ in BLOCK_LAYOUT)
        self.final_drop = MCDropout(cfg.dropout)
        self.heads = nn.ModuleList(nn.Linear(m * widths[-1], t.num_classes) for t in cfg.tasks)

    @property
    def embedding_dim(self) -> int:
        return len(self.cfg.tasks) * self.cfg.stage_widths[-1]

    def forward_prefix(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Deterministic part: stem + first RRA block per modality."""
        return [
            b.blocks[0](b.stem(x)) for b, x in zip(self.branches, xs, strict=True)
        ]  # M x (B, W0, H/4, W/4)

    def forward_suffix_features(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """Stochastic part up to the pooled embedding (B, M * W3)."""
        xs = [b.after_block(0, f) for b, f in zip(self.branches, feats, strict=True)]
        xs = self.mifas[0](xs)
        for i in range(1, len(BLOCK_LAYOUT)):
            xs = [b.after_block(i, b.blocks[i](x)) for b, x in zip(self.branches, xs, strict=True)]
            xs = self.mifas[i](xs)
        fused = self.final_drop(torch.cat(xs, dim=1))  # (B, M*W3, H/32, W/32)
        return fused.mean(dim=(2, 3))  # (B, M*W3)

    def forward_head(self, embedding: torch.Tensor) -> list[torch.Tensor]:
        """Logits per task; softmax (with the card's temperature) is applied outside."""
        return [head(embedding) for head in self.heads]

    def forward_suffix(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        return self.forward_head(self.forward_suffix_features(feats))

    def forward_features(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return self.forward_suffix_features(self.forward_prefix(xs))

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        return self.forward_head(self.forward_features(xs))


def build_model(cfg: ModelConfig) -> DrifaNet:
    return DrifaNet(cfg)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
