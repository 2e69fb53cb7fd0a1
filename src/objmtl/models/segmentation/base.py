"""What every semantic segmentation model shares: backbone -> decode head -> logits at the input size."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.segmentation.fcn import FCNHead

from objmtl.errors import UserError

__all__ = ["SegmentationModel"]


class SegmentationModel(nn.Module):
    """A backbone, a decode head (:meth:`decode`, set by subclasses) and an optional auxiliary head.

    ``forward`` returns torchvision's segmentation layout: ``{"out": Tensor[N, K, H, W]}`` with the
    logits bilinearly upsampled to the input size and, in training with ``aux_head``, ``"aux"``:
    torchvision's :class:`~torchvision.models.segmentation.fcn.FCNHead` on the second-to-last
    backbone level (C4 when the backbone returns C4 and C5), upsampled the same way.

    Args:
        backbone: returns a list of feature maps, finest first, and declares ``out_channels`` and
            ``strides`` (:func:`objmtl.models.build_backbone`).
        num_classes: mask classes (``meta.json``'s ``mask_classes``; 255 is ignore, not a class).
        aux_head: add the auxiliary FCN head (its loss weight is the task's ``aux_weight``).
    """

    kind = "seg"

    def __init__(self, *, backbone: nn.Module, num_classes: int, aux_head: bool = False) -> None:
        super().__init__()
        if num_classes < 1:
            raise UserError("model.num_classes is 0: the shards' meta.json lists no mask_classes (polygon-only "
                            "shards); set model.num_classes and task.module.class_names "
                            "(background + one per class), or convert with masks")
        self.backbone = backbone
        self.num_classes = int(num_classes)
        self.aux_head: nn.Module | None = None
        if aux_head:
            if len(backbone.out_channels) < 2:
                raise UserError("model.aux_head=true needs two backbone levels: give model.backbone.out_indices "
                                "with C4 before C5, e.g. [2, 3]")
            self.aux_head = FCNHead(backbone.out_channels[-2], self.num_classes)

    def decode(self, feats: list[Tensor]) -> Tensor:
        """Backbone maps (finest first) -> logits Tensor[N, K, h, w] at the head's resolution."""
        raise NotImplementedError

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """images (Tensor[N, 3, H, W]) -> ``{"out": Tensor[N, K, H, W]}`` (and ``"aux"`` in training)."""
        size = images.shape[-2:]
        feats = self.backbone(images)
        out = {"out": F.interpolate(self.decode(feats), size=size, mode="bilinear", align_corners=False)}
        if self.aux_head is not None and self.training:
            out["aux"] = F.interpolate(self.aux_head(feats[-2]), size=size, mode="bilinear", align_corners=False)
        return out
