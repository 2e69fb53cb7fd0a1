"""RetinaNet (Lin et al., ICCV 2017) on FPN P3-P7, as a :class:`DenseDetector`.

Choices (mmdet's ``RetinaHead`` / Detectron unless noted):

- 9 anchors per location: octave scales ``octave_base_scale * 2 ** (i / 3)`` (base 4, i = 0, 1, 2) times the
  stride, by aspect ratios (h / w) 0.5, 1, 2; ratio-major, location-major overall (row ``loc * 9 + a``);
  centred at ``(x + anchor_offset) * stride`` (0.5 by default as the repo's other detectors; mmdet uses 0);
- max-IoU assignment: IoU >= 0.5 positive (to the box of highest IoU), < 0.4 negative, in between ignored;
  low-quality matches allowed (every anchor whose IoU with a box is that box's highest, and > 0, is
  positive for it: for the box of highest IoU among those it is best for); crowd boxes make no positives
  and an anchor with more than half its area inside one is ignored unless positive (as in ATSS);
- losses: sigmoid focal loss over non-ignored anchors / positives, and smooth L1 (beta 1/9, Detectron's) of
  the DeltaXYWH deltas (means 0, stds 1) summed over positives / positives; no centerness, so scores are
  ``sigmoid(cls)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_iou

from objmtl.models.detection.atss_assigner import IGNORED, NEGATIVE, _iof
from objmtl.models.detection.box_coder import DeltaXYWHCoder
from objmtl.models.detection.dense_head import DenseHead
from objmtl.models.detection.detector import DenseDetector, Part, build_head, build_neck

__all__ = ["RetinaNet", "max_iou_assign", "retinanet_anchors"]


def retinanet_anchors(
    feature_sizes: Sequence[tuple[int, int]],
    strides: Sequence[int],
    *,
    octave_base_scale: float = 4.0,
    scales_per_octave: int = 3,
    ratios: Sequence[float] = (0.5, 1.0, 2.0),
    offset: float = 0.5,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> list[Tensor]:
    """Per level [H_l * W_l * S * R, 4] xyxy anchors, row ``(y * W + x) * S * R + r * S + s``.

    Args:
        feature_sizes: ``(H, W)`` of each level.
        strides: Stride of each level, in pixels.
        octave_base_scale: Side of the smallest square anchor, in strides.
        scales_per_octave: S scales ``octave_base_scale * 2 ** (i / S)``.
        ratios: R aspect ratios h / w (each anchor keeps the area of its square).
        offset: Anchor centre inside its cell, in strides.
        device: Device of the returned tensors.
        dtype: Floating dtype of the returned tensors.

    Returns:
        One tensor per level.
    """
    scales = torch.tensor([octave_base_scale * 2 ** (i / scales_per_octave) for i in range(scales_per_octave)],
                          dtype=dtype, device=device)  # [S]
    h_ratios = torch.tensor(list(ratios), dtype=dtype, device=device).sqrt()  # [R]
    levels = []
    for (height, width), stride in zip(feature_sizes, strides, strict=True):
        ws = (stride * scales[None, :] / h_ratios[:, None]).reshape(-1)  # [R * S]
        hs = (stride * scales[None, :] * h_ratios[:, None]).reshape(-1)  # [R * S]
        base = torch.stack([-ws, -hs, ws, hs], dim=1) * 0.5  # [R * S, 4]
        xs = (torch.arange(width, device=device, dtype=dtype) + offset) * stride  # [W]
        ys = (torch.arange(height, device=device, dtype=dtype) + offset) * stride  # [H]
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")  # [H, W] each
        centres = torch.stack([grid_x, grid_y, grid_x, grid_y], dim=-1).reshape(-1, 1, 4)  # [H * W, 1, 4]
        levels.append((centres + base[None]).reshape(-1, 4))  # [H * W * R * S, 4]
    return levels


def max_iou_assign(
    anchors: Tensor,
    gt_boxes: Tensor,
    *,
    gt_ignore: Tensor | None = None,
    pos_iou_thr: float = 0.5,
    neg_iou_thr: float = 0.4,
    low_quality: bool = True,
    ignore_iof_thr: float = 0.5,
) -> Tensor:
    """Assigns the anchors of one image by IoU (see the module docstring).

    Args:
        anchors: [A, 4] xyxy.
        gt_boxes: [G, 4] xyxy, crowd boxes included; G may be 0.
        gt_ignore: [G] bool, True for crowd boxes; None means none.
        pos_iou_thr: IoU from which an anchor is positive.
        neg_iou_thr: IoU below which an anchor is negative (ignored in between).
        low_quality: Also match each box's best anchors whatever their IoU (> 0).
        ignore_iof_thr: Anchors with IoF above this with a crowd box are ignored unless positive.

    Returns:
        [A] long: the matched row of ``gt_boxes``, ``NEGATIVE`` (-1) or ``IGNORED`` (-2).
    """
    gt_boxes = gt_boxes.to(anchors).reshape(-1, 4)  # [G, 4]
    if gt_ignore is None:
        gt_ignore = torch.zeros(gt_boxes.shape[0], dtype=torch.bool, device=anchors.device)
    gt_ignore = gt_ignore.to(device=anchors.device, dtype=torch.bool)
    real_rows = torch.nonzero(~gt_ignore).squeeze(1)  # [R]
    real, crowd = gt_boxes[real_rows], gt_boxes[gt_ignore]  # [R, 4], [C, 4]
    matched = torch.full((anchors.shape[0],), NEGATIVE, dtype=torch.long, device=anchors.device)
    if real.shape[0] > 0 and anchors.shape[0] > 0:
        iou = box_iou(anchors, real)  # [A, R]
        best_iou, best = iou.max(dim=1)  # [A]
        matched = torch.where(best_iou >= pos_iou_thr, real_rows[best], matched)
        matched = torch.where((best_iou >= neg_iou_thr) & (best_iou < pos_iou_thr), IGNORED, matched)
        if low_quality:
            gt_best = iou.amax(dim=0)  # [R]
            low = (iou == gt_best[None, :]) & (gt_best[None, :] > 0)  # [A, R]
            low_gt = torch.where(low, iou, -1.0).argmax(dim=1)  # [A]
            matched = torch.where(low.any(dim=1), real_rows[low_gt], matched)
    if crowd.shape[0] > 0 and anchors.shape[0] > 0:
        covered = _iof(anchors, crowd).amax(dim=1) > ignore_iof_thr  # [A]
        matched = torch.where(covered & (matched < 0), IGNORED, matched)
    return matched


class RetinaNet(DenseDetector):
    """RetinaNet on FPN P3-P7 around a C3-C5 backbone, with a 9-anchor :class:`DenseHead` (no centerness, no
    scales).

    Args:
        backbone: Returns C3-C5 (``out_indices: [1, 2, 3]``) and declares ``out_channels`` and ``strides``.
        num_classes: Foreground classes.
        neck: A neck module or factory (``_partial_: true``) taking ``in_channels`` and ``in_strides``;
            default :class:`FPN` with ``fpn_channels``.
        head: A head module or factory taking ``in_channels``, ``num_classes`` and ``num_levels``; default a
            :class:`DenseHead` with ``scales_per_octave * len(ratios)`` anchors, ``num_convs`` and ``prior_prob``.
        fpn_channels: Channels of the default neck.
        num_convs: Conv blocks per tower of the default head.
        prior_prob: Initial foreground probability of the default head.
        coder: Box coder of the deltas (default: means 0, stds 1, as Detectron's RetinaNet).
        anchor_offset: Anchor centre inside its cell, in strides.
        octave_base_scale: Side of the smallest anchor, in strides.
        scales_per_octave: Anchor scales per octave.
        ratios: Anchor aspect ratios h / w.
        pos_iou_thr: IoU from which an anchor is positive.
        neg_iou_thr: IoU below which an anchor is negative.
        smooth_l1_beta: Smooth L1 beta of the delta loss.
        bbox_loss_weight: Weight of the delta loss.
        nms_thresh: NMS IoU (mmdet's RetinaNet: 0.5).
        **detector: Any other :class:`DenseDetector` setting (focal loss, inference).
    """

    def __init__(self, *, backbone: nn.Module, num_classes: int, neck: Part = None, head: Part = None,
                 fpn_channels: int = 256, num_convs: int = 4, prior_prob: float = 0.01,
                 coder: DeltaXYWHCoder | None = None, anchor_offset: float = 0.5, octave_base_scale: float = 4.0,
                 scales_per_octave: int = 3, ratios: Sequence[float] = (0.5, 1.0, 2.0), pos_iou_thr: float = 0.5,
                 neg_iou_thr: float = 0.4, smooth_l1_beta: float = 1 / 9, bbox_loss_weight: float = 1.0,
                 nms_thresh: float = 0.5, **detector: Any) -> None:
        neck = build_neck(neck, backbone=backbone, channels=fpn_channels)
        default: Callable[..., nn.Module] = partial(DenseHead, num_anchors=scales_per_octave * len(ratios),
                                                    num_convs=num_convs, prior_prob=prior_prob, centerness=False,
                                                    scales=False)
        head = build_head(head, default=default, neck=neck, num_classes=num_classes)
        super().__init__(backbone=backbone, neck=neck, head=head, num_classes=num_classes,
                         bbox_loss_weight=bbox_loss_weight, nms_thresh=nms_thresh, **detector)
        self.coder = coder or DeltaXYWHCoder(stds=(1.0, 1.0, 1.0, 1.0))
        self.anchor_offset = anchor_offset
        self.octave_base_scale, self.scales_per_octave = octave_base_scale, scales_per_octave
        self.ratios = [float(r) for r in ratios]
        self.pos_iou_thr, self.neg_iou_thr, self.smooth_l1_beta = pos_iou_thr, neg_iou_thr, smooth_l1_beta

    def anchors(self, outputs: dict[str, list[Tensor]]) -> list[Tensor]:
        """Per level [H_l * W_l * 9, 4] xyxy float32 anchors (:func:`retinanet_anchors`)."""
        ref = outputs["cls_logits"]
        sizes = [(int(x.shape[-2]), int(x.shape[-1])) for x in ref]
        return retinanet_anchors(sizes, self.strides, octave_base_scale=self.octave_base_scale,
                                 scales_per_octave=self.scales_per_octave, ratios=self.ratios,
                                 offset=self.anchor_offset, device=ref[0].device, dtype=torch.float32)

    def assign(self, anchors: list[Tensor], boxes: Tensor, crowd: Tensor | None) -> Tensor:
        """[A] matched box of every anchor (:func:`max_iou_assign`)."""
        return max_iou_assign(torch.cat(anchors), boxes, gt_ignore=crowd, pos_iou_thr=self.pos_iou_thr,
                              neg_iou_thr=self.neg_iou_thr)

    def decode(self, anchors: Tensor, deltas: Tensor, strides: Tensor,
               max_shape: tuple[int, int] | None = None) -> Tensor:
        """Boxes [P, 4] xyxy of DeltaXYWH ``deltas`` [P, 4] at ``anchors`` [P, 4] (``strides`` unused)."""
        return self.coder.decode(anchors, deltas, max_shape=max_shape)

    def box_losses(self, anchors: Tensor, strides: Tensor, deltas: Tensor, ctr: Tensor | None, boxes: Tensor,
                   norm: float) -> dict[str, Tensor]:
        """``loss_bbox``: smooth L1 of ``deltas`` [P, 4] against the encoded ``boxes`` [P, 4] at ``anchors``
        [P, 4], summed and divided by ``norm``."""
        target = self.coder.encode(anchors, boxes)  # [P, 4]
        loss = F.smooth_l1_loss(deltas, target, beta=self.smooth_l1_beta, reduction="sum") / norm
        return {"loss_bbox": loss}
