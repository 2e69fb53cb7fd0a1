"""DeepLabV3 and FCN: torchvision's segmentation heads on any backbone of the factory."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn
from torchvision.models.segmentation.deeplabv3 import DeepLabHead
from torchvision.models.segmentation.fcn import FCNHead

from objmtl.errors import UserError
from objmtl.models.segmentation.base import SegmentationModel

__all__ = ["FCN", "DeepLabV3"]


class DeepLabV3(SegmentationModel):
    """DeepLabV3 (Chen et al., 2017): torchvision's ``DeepLabHead`` (ASPP + 3x3 conv + classifier) on the
    backbone's last level.

    The factory's backbones are not dilated, so the last level has stride 32 (C5) and the default
    atrous rates are the paper's (6, 12, 18) at output stride 16, halved.

    Args:
        backbone: see :class:`~objmtl.models.segmentation.base.SegmentationModel`.
        num_classes: mask classes.
        atrous_rates: the three dilation rates of ASPP.
        aux_head: see :class:`~objmtl.models.segmentation.base.SegmentationModel`.
    """

    def __init__(self, *, backbone: nn.Module, num_classes: int, atrous_rates: Sequence[int] = (3, 6, 9),
                 aux_head: bool = False) -> None:
        super().__init__(backbone=backbone, num_classes=num_classes, aux_head=aux_head)
        self.head = DeepLabHead(int(backbone.out_channels[-1]), self.num_classes, [int(r) for r in atrous_rates])

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        if self.training and images.shape[0] == 1:
            raise UserError("model=deeplabv3 trains on batches of 2 or more: ASPP's image pooling has a BatchNorm "
                            "that sees one value per channel (set data.batch_size >= 2)")
        return super().forward(images)

    def decode(self, feats: list[Tensor]) -> Tensor:
        return self.head(feats[-1])


class FCN(SegmentationModel):
    """FCN (Long et al., CVPR 2015) as torchvision builds it: ``FCNHead`` (3x3 conv to in/4 channels,
    BatchNorm, ReLU, dropout, 1x1 classifier) on the backbone's last level.

    Args:
        backbone: see :class:`~objmtl.models.segmentation.base.SegmentationModel`.
        num_classes: mask classes.
        aux_head: see :class:`~objmtl.models.segmentation.base.SegmentationModel`.
    """

    def __init__(self, *, backbone: nn.Module, num_classes: int, aux_head: bool = False) -> None:
        super().__init__(backbone=backbone, num_classes=num_classes, aux_head=aux_head)
        self.head = FCNHead(int(backbone.out_channels[-1]), self.num_classes)

    def decode(self, feats: list[Tensor]) -> Tensor:
        return self.head(feats[-1])
