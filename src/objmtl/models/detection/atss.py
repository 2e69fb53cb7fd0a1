"""ATSS (Zhang et al., CVPR 2020) as a :class:`DenseDetector`: one square anchor per location, adaptive
training sample selection, DeltaXYWH regression, centerness.

Rules (mmdet's ``ATSSHead``): anchors of side ``octave_base_scale * stride`` centred at
``(x + anchor_offset) * stride``; the ATSS assignment of ``atss_assigner.py`` (``assign_topk`` candidates
per level and box, IoU above mean + std, centre inside the box); GIoU of the decoded boxes weighted by the
centerness target and centerness BCE (``centerness.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from objmtl.models.detection.atss_assigner import atss_assign
from objmtl.models.detection.atss_head import ATSSHead
from objmtl.models.detection.box_coder import DeltaXYWHCoder, anchor_points_and_boxes
from objmtl.models.detection.centerness import centerness_box_losses
from objmtl.models.detection.detector import DenseDetector, Part, build_head, build_neck

__all__ = ["ATSS"]


class ATSS(DenseDetector):
    """ATSS on FPN P3-P7 around a backbone that returns C3, C4 and C5.

    Args:
        backbone: Returns C3-C5 (``out_indices: [1, 2, 3]``) and declares ``out_channels`` and ``strides``.
        num_classes: Foreground classes.
        neck: A neck module or factory (``_partial_: true``) taking ``in_channels`` and ``in_strides``;
            default :class:`FPN` with ``fpn_channels``.
        head: A head module or factory taking ``in_channels``, ``num_classes`` and ``num_levels``; default
            :class:`ATSSHead` with ``num_convs`` and ``prior_prob``.
        fpn_channels: Channels of the default neck.
        num_convs: Conv blocks per tower of the default head.
        prior_prob: Initial foreground probability of the default head.
        coder: Box coder of the regression deltas (mmdet's ATSS default: means 0, stds 0.1, 0.1, 0.2, 0.2).
        octave_base_scale: Anchor side in strides.
        anchor_offset: Anchor centre inside its cell, in strides.
        assign_topk: ATSS candidates per level and box.
        bbox_loss_weight: Weight of the GIoU loss in the total (mmdet's ATSS: 2.0).
        nms_thresh: NMS IoU (mmdet's ATSS: 0.6).
        **detector: Any other :class:`DenseDetector` setting (focal loss, inference).
    """

    def __init__(self, *, backbone: nn.Module, num_classes: int, neck: Part = None, head: Part = None,
                 fpn_channels: int = 256, num_convs: int = 4, prior_prob: float = 0.01,
                 coder: DeltaXYWHCoder | None = None, octave_base_scale: int = 8, anchor_offset: float = 0.5,
                 assign_topk: int = 9, bbox_loss_weight: float = 2.0, nms_thresh: float = 0.6,
                 **detector: Any) -> None:
        neck = build_neck(neck, backbone=backbone, channels=fpn_channels)
        default: Callable[..., nn.Module] = partial(ATSSHead, num_convs=num_convs, prior_prob=prior_prob)
        head = build_head(head, default=default, neck=neck, num_classes=num_classes)
        super().__init__(backbone=backbone, neck=neck, head=head, num_classes=num_classes,
                         bbox_loss_weight=bbox_loss_weight, nms_thresh=nms_thresh, **detector)
        self.coder = coder or DeltaXYWHCoder()
        self.octave_base_scale, self.anchor_offset, self.assign_topk = octave_base_scale, anchor_offset, assign_topk

    def anchors(self, outputs: dict[str, list[Tensor]]) -> list[Tensor]:
        """Per level [H_l * W_l, 4] xyxy float32 anchors."""
        ref = outputs["cls_logits"]
        sizes = [(int(x.shape[-2]), int(x.shape[-1])) for x in ref]
        levels = anchor_points_and_boxes(sizes, self.strides, octave_base_scale=self.octave_base_scale,
                                         offset=self.anchor_offset, device=ref[0].device, dtype=torch.float32)
        return [anchors for _, anchors in levels]

    def assign(self, anchors: list[Tensor], boxes: Tensor, crowd: Tensor | None) -> Tensor:
        """[A] matched box of every anchor (:func:`atss_assign`)."""
        return atss_assign(anchors, boxes, gt_ignore=crowd, topk=self.assign_topk).matched_gt

    def decode(self, anchors: Tensor, deltas: Tensor, strides: Tensor,
               max_shape: tuple[int, int] | None = None) -> Tensor:
        """Boxes [P, 4] xyxy of DeltaXYWH ``deltas`` [P, 4] at ``anchors`` [P, 4] (``strides`` unused)."""
        return self.coder.decode(anchors, deltas, max_shape=max_shape)

    def box_losses(self, anchors: Tensor, strides: Tensor, deltas: Tensor, ctr: Tensor | None, boxes: Tensor,
                   norm: float) -> dict[str, Tensor]:
        """GIoU weighted by the centerness target, and centerness BCE (:func:`centerness_box_losses`)."""
        return centerness_box_losses(self.decode(anchors, deltas, strides), anchors, ctr, boxes, norm)
