"""The centerness target and the box losses that use it, shared by ATSS and FCOS (mmdet's ``ATSSHead`` and
``FCOSHead``): GIoU of the decoded positive boxes, each weighted by its centerness target and divided by the
sum of those targets, and binary cross-entropy of the centerness logits divided by the number of positives."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import generalized_box_iou_loss

__all__ = ["centerness_box_losses", "centerness_target"]


def centerness_target(anchors: Tensor, boxes: Tensor) -> Tensor:
    """FCOS centerness of each anchor's centre in its matched box (mmdet's ATSS ``centerness_target``).

    Args:
        anchors: [P, 4] xyxy, centres inside ``boxes``.
        boxes: [P, 4] xyxy.

    Returns:
        [P] ``sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))`` in [0, 1].
    """
    cx, cy = (anchors[:, 0] + anchors[:, 2]) * 0.5, (anchors[:, 1] + anchors[:, 3]) * 0.5
    lr = torch.stack([cx - boxes[:, 0], boxes[:, 2] - cx], dim=1).clamp(min=0)  # [P, 2]
    tb = torch.stack([cy - boxes[:, 1], boxes[:, 3] - cy], dim=1).clamp(min=0)  # [P, 2]
    ratio = (lr.amin(1) / lr.amax(1).clamp(min=1e-6)) * (tb.amin(1) / tb.amax(1).clamp(min=1e-6))
    return ratio.sqrt()


def centerness_box_losses(pred: Tensor, anchors: Tensor, ctr: Tensor | None, boxes: Tensor,
                          norm: float) -> dict[str, Tensor]:
    """``loss_bbox`` and ``loss_centerness`` of the positives.

    Args:
        pred: [P, 4] decoded boxes of the positives.
        anchors: [P, 4] their priors (points as degenerate boxes for FCOS).
        ctr: [P] their centerness logits (the head must have a centerness output).
        boxes: [P, 4] their matched boxes.
        norm: The positive count over the batch, at least 1.
    """
    if ctr is None:
        raise ValueError("centerness losses need a head with a centerness output")
    ctr_t = centerness_target(anchors, boxes)  # [P]
    giou = generalized_box_iou_loss(pred, boxes, reduction="none")  # [P]
    loss_bbox = (giou * ctr_t).sum() / ctr_t.sum().clamp(min=1e-6)
    loss_ctr = F.binary_cross_entropy_with_logits(ctr, ctr_t, reduction="sum") / norm
    return {"loss_bbox": loss_bbox, "loss_centerness": loss_ctr}
