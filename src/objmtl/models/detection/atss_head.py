"""The ATSS head (Zhang et al., CVPR 2020): shared classification and regression towers, with centerness."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["ATSSHead", "Scale"]


class Scale(nn.Module):
    """A learnable scalar that multiplies its input (one per pyramid level).

    Args:
        init: Initial value.
    """

    def __init__(self, *, init: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(init)))

    def forward(self, x: Tensor) -> Tensor:
        """``x`` of any shape, times the scale."""
        return x * self.scale


def _tower(channels: int, num_convs: int, groups: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(num_convs):
        layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.GroupNorm(groups, channels), nn.ReLU()]
    return nn.Sequential(*layers)


class ATSSHead(nn.Module):
    """Towers shared across levels; one anchor per location.

    The classification tower ends in ``num_classes`` sigmoid logits, the regression tower in 4 box deltas
    (multiplied by a learnable per-level :class:`Scale`) and 1 centerness logit.

    Args:
        in_channels: Channels of every input level (the neck's output).
        num_classes: Foreground classes (no background logit: sigmoid classification).
        num_levels: Pyramid levels (one Scale each).
        num_convs: 3x3 conv + GroupNorm + ReLU blocks per tower.
        gn_groups: GroupNorm groups.
        prior_prob: Initial foreground probability of every logit (the classification bias).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        num_levels: int = 5,
        num_convs: int = 4,
        gn_groups: int = 32,
        prior_prob: float = 0.01,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.cls_tower = _tower(in_channels, num_convs, gn_groups)
        self.reg_tower = _tower(in_channels, num_convs, gn_groups)
        self.cls_logits = nn.Conv2d(in_channels, num_classes, 3, padding=1)
        self.bbox_pred = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.centerness = nn.Conv2d(in_channels, 1, 3, padding=1)
        self.scales = nn.ModuleList([Scale() for _ in range(num_levels)])
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.01)
                nn.init.zeros_(module.bias)
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_prob) / prior_prob))

    def forward(self, feats: list[Tensor]) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """Raw outputs of every level.

        Args:
            feats: Per level [N, in_channels, H_l, W_l].

        Returns:
            ``(cls_logits, bbox_deltas, centerness)``, per level [N, num_classes, H_l, W_l],
            [N, 4, H_l, W_l] and [N, 1, H_l, W_l].
        """
        if len(feats) != len(self.scales):
            raise ValueError(f"head built for {len(self.scales)} levels, got {len(feats)}")
        cls_out, reg_out, ctr_out = [], [], []
        for feat, scale in zip(feats, self.scales, strict=True):
            cls_feat = self.cls_tower(feat)
            reg_feat = self.reg_tower(feat)
            cls_out.append(self.cls_logits(cls_feat))
            reg_out.append(scale(self.bbox_pred(reg_feat)))
            ctr_out.append(self.centerness(reg_feat))
        return cls_out, reg_out, ctr_out
