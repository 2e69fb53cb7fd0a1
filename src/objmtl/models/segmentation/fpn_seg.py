"""Semantic FPN (Kirillov et al., Panoptic FPN, CVPR 2019): an FPN over C2..C5 merged at stride 4."""

from __future__ import annotations

import math
from collections import OrderedDict

import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import FeaturePyramidNetwork

from objmtl.models.segmentation.base import SegmentationModel

__all__ = ["SemanticFPN"]


def _block(in_channels: int, out_channels: int, num_groups: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
                         nn.GroupNorm(num_groups, out_channels), nn.ReLU(inplace=True))


class SemanticFPN(SegmentationModel):
    """torchvision's ``FeaturePyramidNetwork`` on the backbone's levels; each level goes through
    conv (3x3, GroupNorm, ReLU) + 2x bilinear upsampling blocks down to the finest stride, the
    levels are summed and a 1x1 conv gives the class logits.

    Args:
        backbone: see :class:`~objmtl.models.segmentation.base.SegmentationModel`; its levels must
            double in stride (C2..C5 or C3..C5).
        num_classes: mask classes.
        fpn_channels: channels of every FPN level.
        head_channels: channels of the upsampling blocks.
        num_groups: GroupNorm groups (must divide ``head_channels``).
        dropout: Dropout2d before the classifier.
        aux_head: see :class:`~objmtl.models.segmentation.base.SegmentationModel`.
    """

    def __init__(self, *, backbone: nn.Module, num_classes: int, fpn_channels: int = 256, head_channels: int = 128,
                 num_groups: int = 32, dropout: float = 0.1, aux_head: bool = False) -> None:
        super().__init__(backbone=backbone, num_classes=num_classes, aux_head=aux_head)
        strides = [int(s) for s in backbone.strides]
        if any(b != 2 * a for a, b in zip(strides, strides[1:], strict=False)):
            raise ValueError(f"backbone strides {strides}: each level must double the previous one")
        self.fpn = FeaturePyramidNetwork([int(c) for c in backbone.out_channels], fpn_channels)
        self.scale_heads = nn.ModuleList()
        for s in strides:
            n = max(1, int(math.log2(s // strides[0])))
            self.scale_heads.append(nn.ModuleList(
                [_block(fpn_channels if i == 0 else head_channels, head_channels, num_groups) for i in range(n)]))
        self.upsample = [s > strides[0] for s in strides]
        self.classifier = nn.Sequential(nn.Dropout2d(dropout), nn.Conv2d(head_channels, self.num_classes, 1))

    def decode(self, feats: list[Tensor]) -> Tensor:
        pyramid = list(self.fpn(OrderedDict((f"c{i}", f) for i, f in enumerate(feats))).values())
        size = pyramid[0].shape[-2:]
        merged = None
        for x, blocks, up in zip(pyramid, self.scale_heads, self.upsample, strict=True):
            for block in blocks:
                x = block(x)
                if up:
                    x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
            if x.shape[-2:] != size:  # odd input sizes: ceil-divided maps overshoot by a pixel
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            merged = x if merged is None else merged + x
        return self.classifier(merged)  # [N, K, H / s0, W / s0]
