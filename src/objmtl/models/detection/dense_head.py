"""Shared pieces of the dense heads (ATSS, FCOS, RetinaNet): the conv tower, the per-level scale and a head
with a classification tower and a regression tower applied to every pyramid level."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["ConvTower", "DenseHead", "Scale"]


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


class ConvTower(nn.Sequential):
    """``num_convs`` blocks of 3x3 conv + GroupNorm + ReLU, keeping channels and resolution.

    Children are numbered ``0, 1, 2, ...`` (conv, norm, ReLU, conv, ...), the layout of a plain
    ``nn.Sequential``, so checkpoints of heads that built their towers by hand load unchanged.

    Args:
        channels: Input and output channels.
        num_convs: Blocks (0 gives the identity).
        gn_groups: GroupNorm groups (must divide ``channels``).
    """

    def __init__(self, *, channels: int, num_convs: int = 4, gn_groups: int = 32) -> None:
        layers: list[nn.Module] = []
        for _ in range(num_convs):
            layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.GroupNorm(gn_groups, channels), nn.ReLU()]
        super().__init__(*layers)


class DenseHead(nn.Module):
    """Classification and regression towers shared across levels, with ``num_anchors`` priors per location.

    The classification tower ends in ``num_anchors * num_classes`` sigmoid logits, the regression tower in
    ``num_anchors * 4`` box values (times a learnable per-level :class:`Scale` when ``scales``) and, when
    ``centerness``, one centerness logit per location. Channels are anchor-major: channel ``a * K + k`` is
    class ``k`` of anchor ``a``. Every conv starts from N(0, 0.01) weights and zero bias; the classification
    bias from ``prior_prob``.

    Args:
        in_channels: Channels of every input level (the neck's output).
        num_classes: Foreground classes (no background logit: sigmoid classification).
        num_anchors: Priors per location.
        num_levels: Pyramid levels (one Scale each when ``scales``).
        num_convs: 3x3 conv + GroupNorm + ReLU blocks per tower.
        gn_groups: GroupNorm groups.
        prior_prob: Initial foreground probability of every logit (the classification bias).
        centerness: Add a centerness logit on the regression tower.
        scales: Multiply the box outputs by a learnable scale per level.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        num_anchors: int = 1,
        num_levels: int = 5,
        num_convs: int = 4,
        gn_groups: int = 32,
        prior_prob: float = 0.01,
        centerness: bool = True,
        scales: bool = True,
    ) -> None:
        super().__init__()
        self.num_classes, self.num_anchors, self.num_levels = num_classes, num_anchors, num_levels
        self.cls_tower = ConvTower(channels=in_channels, num_convs=num_convs, gn_groups=gn_groups)
        self.reg_tower = ConvTower(channels=in_channels, num_convs=num_convs, gn_groups=gn_groups)
        self.cls_logits = nn.Conv2d(in_channels, num_anchors * num_classes, 3, padding=1)
        self.bbox_pred = nn.Conv2d(in_channels, num_anchors * 4, 3, padding=1)
        self.centerness = nn.Conv2d(in_channels, 1, 3, padding=1) if centerness else None
        self.scales = nn.ModuleList([Scale() for _ in range(num_levels)]) if scales else None
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.01)
                nn.init.zeros_(module.bias)
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_prob) / prior_prob))

    def forward(self, feats: list[Tensor]) -> tuple[list[Tensor], ...]:
        """Raw outputs of every level.

        Args:
            feats: Per level [N, in_channels, H_l, W_l].

        Returns:
            ``(cls_logits, bbox_deltas)`` and, with centerness, ``centerness``: per level
            [N, num_anchors * num_classes, H_l, W_l], [N, num_anchors * 4, H_l, W_l] and [N, 1, H_l, W_l].
        """
        if len(feats) != self.num_levels:
            raise ValueError(f"head built for {self.num_levels} levels, got {len(feats)}")
        cls_out, reg_out, ctr_out = [], [], []
        for lvl, feat in enumerate(feats):
            cls_feat = self.cls_tower(feat)
            reg_feat = self.reg_tower(feat)
            cls_out.append(self.cls_logits(cls_feat))
            box = self.bbox_pred(reg_feat)
            reg_out.append(self.scales[lvl](box) if self.scales is not None else box)
            if self.centerness is not None:
                ctr_out.append(self.centerness(reg_feat))
        return (cls_out, reg_out, ctr_out) if self.centerness is not None else (cls_out, reg_out)
