"""FCOS (Tian et al., ICCV 2019) on FPN P3-P7, as a :class:`DenseDetector`: anchor-free points, (l, t, r, b)
distances, centerness.

Choices (mmdet's ``FCOSHead`` with its "improvements" where noted):

- points at the cell centres (``(x + 0.5) * stride``); the priors handed around are degenerate boxes
  ``(x, y, x, y)``;
- regression ``ReLU(Scale_l(raw)) * stride`` (``norm_on_bbox=True``: outputs are distances in strides, as
  torchvision's FCOS and mmdet's improved FCOS), or ``exp(Scale_l(raw))`` pixels (``norm_on_bbox=False``,
  the paper);
- a point is positive for a box if it lies inside it (inside the box clipped to a ``radius * stride``
  square around the box centre when ``center_sampling_radius`` is set, default 1.5 as torchvision; None
  turns centre sampling off, mmdet's default) and its largest distance to the box sides falls in its level's
  range (``lo <= max(l, t, r, b) <= hi``); a point positive for several boxes takes the smallest-area one
  (the lowest index on a tie);
- crowd boxes make no positives; a point inside a crowd box that is not positive is ignored;
- losses as ATSS: focal over non-ignored points / positives, GIoU weighted by the centerness target (over
  the targets' sum), centerness BCE / positives; scores ``sigmoid(cls) * sigmoid(centerness)`` (mmdet's
  product, not torchvision's square root of it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from objmtl.models.detection.atss_assigner import IGNORED, NEGATIVE
from objmtl.models.detection.box_coder import anchor_points_and_boxes
from objmtl.models.detection.centerness import centerness_box_losses
from objmtl.models.detection.dense_head import DenseHead
from objmtl.models.detection.detector import DenseDetector, Part, build_head, build_neck

__all__ = ["FCOS", "fcos_assign"]

REGRESS_RANGES = ((-1.0, 64.0), (64.0, 128.0), (128.0, 256.0), (256.0, 512.0), (512.0, math.inf))


def fcos_assign(
    points: Sequence[Tensor],
    strides: Sequence[int],
    gt_boxes: Tensor,
    *,
    regress_ranges: Sequence[Sequence[float]] = REGRESS_RANGES,
    gt_ignore: Tensor | None = None,
    center_sampling_radius: float | None = 1.5,
) -> Tensor:
    """Assigns the points of one image to its boxes with FCOS' rule (see the module docstring).

    Args:
        points: Per level [A_l, 2] ``(x, y)``.
        strides: Stride of each level.
        gt_boxes: [G, 4] xyxy, crowd boxes included; G may be 0.
        regress_ranges: Per level ``(lo, hi)`` of ``max(l, t, r, b)`` in pixels.
        gt_ignore: [G] bool, True for crowd boxes; None means none.
        center_sampling_radius: Radius in strides of the centre region, or None for the whole box.

    Returns:
        [A] long: the matched row of ``gt_boxes``, ``NEGATIVE`` (-1) or ``IGNORED`` (-2).
    """
    if not len(points) == len(strides) == len(regress_ranges):
        raise ValueError(f"{len(points)} levels, {len(strides)} strides, {len(regress_ranges)} ranges")
    flat = torch.cat(list(points), dim=0)  # [A, 2]
    per_point = [(p.shape[0], float(s), float(lo), float(hi))
                 for p, s, (lo, hi) in zip(points, strides, regress_ranges, strict=True)]
    stride = torch.cat([flat.new_full((n,), s) for n, s, _, _ in per_point])  # [A]
    lo = torch.cat([flat.new_full((n,), a) for n, _, a, _ in per_point])  # [A]
    hi = torch.cat([flat.new_full((n,), b) for n, _, _, b in per_point])  # [A]
    gt_boxes = gt_boxes.to(flat).reshape(-1, 4)  # [G, 4]
    if gt_ignore is None:
        gt_ignore = torch.zeros(gt_boxes.shape[0], dtype=torch.bool, device=flat.device)
    gt_ignore = gt_ignore.to(device=flat.device, dtype=torch.bool)
    real_rows = torch.nonzero(~gt_ignore).squeeze(1)  # [R]
    real, crowd = gt_boxes[real_rows], gt_boxes[gt_ignore]  # [R, 4], [C, 4]
    x, y = flat[:, 0, None], flat[:, 1, None]  # [A, 1] each
    matched = torch.full((flat.shape[0],), NEGATIVE, dtype=torch.long, device=flat.device)
    if real.shape[0] > 0 and flat.shape[0] > 0:
        ltrb = torch.stack([x - real[:, 0], y - real[:, 1], real[:, 2] - x, real[:, 3] - y], dim=-1)  # [A, R, 4]
        region = real.expand(flat.shape[0], -1, -1)  # [A, R, 4]
        if center_sampling_radius is not None:
            cx, cy = (real[:, 0] + real[:, 2]) * 0.5, (real[:, 1] + real[:, 3]) * 0.5  # [R] each
            r = stride[:, None] * center_sampling_radius  # [A, 1]
            region = torch.stack([torch.maximum(cx - r, real[:, 0]), torch.maximum(cy - r, real[:, 1]),
                                  torch.minimum(cx + r, real[:, 2]), torch.minimum(cy + r, real[:, 3])], dim=-1)
        inside = torch.stack([x - region[..., 0], y - region[..., 1], region[..., 2] - x,
                              region[..., 3] - y], dim=-1).amin(-1) > 0  # [A, R]
        reach = ltrb.amax(-1)  # [A, R]
        in_range = (reach >= lo[:, None]) & (reach <= hi[:, None])  # [A, R]
        area = (real[:, 2] - real[:, 0]) * (real[:, 3] - real[:, 1])  # [R]
        cand_area = torch.where(inside & in_range, area[None, :], math.inf)  # [A, R]
        best_area, best = cand_area.min(dim=1)  # [A]
        matched = torch.where(torch.isfinite(best_area), real_rows[best], matched)
    if crowd.shape[0] > 0 and flat.shape[0] > 0:
        in_crowd = ((x > crowd[:, 0]) & (y > crowd[:, 1]) & (x < crowd[:, 2]) & (y < crowd[:, 3])).any(1)  # [A]
        matched = torch.where(in_crowd & (matched < 0), IGNORED, matched)
    return matched


class FCOS(DenseDetector):
    """FCOS on FPN P3-P7 around a C3-C5 backbone, with a centerness :class:`DenseHead`.

    Args:
        backbone: Returns C3-C5 (``out_indices: [1, 2, 3]``) and declares ``out_channels`` and ``strides``.
        num_classes: Foreground classes.
        neck: A neck module or factory (``_partial_: true``) taking ``in_channels`` and ``in_strides``;
            default :class:`FPN` with ``fpn_channels``.
        head: A head module or factory taking ``in_channels``, ``num_classes`` and ``num_levels``; default a
            :class:`DenseHead` with centerness and per-level scales, ``num_convs`` and ``prior_prob``.
        fpn_channels: Channels of the default neck.
        num_convs: Conv blocks per tower of the default head.
        prior_prob: Initial foreground probability of the default head.
        anchor_offset: Point inside its cell, in strides.
        regress_ranges: Per level ``(lo, hi)`` of a positive's largest distance, in pixels.
        center_sampling_radius: Centre-sampling radius in strides; None for the whole box.
        norm_on_bbox: Distances ``ReLU(x) * stride`` if True, ``exp(x)`` pixels if False.
        bbox_loss_weight: Weight of the GIoU loss (mmdet's FCOS: 1.0).
        nms_thresh: NMS IoU (mmdet's FCOS: 0.5).
        **detector: Any other :class:`DenseDetector` setting (focal loss, inference).
    """

    def __init__(self, *, backbone: nn.Module, num_classes: int, neck: Part = None, head: Part = None,
                 fpn_channels: int = 256, num_convs: int = 4, prior_prob: float = 0.01, anchor_offset: float = 0.5,
                 regress_ranges: Sequence[Sequence[float]] = REGRESS_RANGES,
                 center_sampling_radius: float | None = 1.5, norm_on_bbox: bool = True,
                 bbox_loss_weight: float = 1.0, nms_thresh: float = 0.5, **detector: Any) -> None:
        neck = build_neck(neck, backbone=backbone, channels=fpn_channels)
        if len(regress_ranges) != len(neck.strides):
            raise ValueError(f"{len(regress_ranges)} regress_ranges for {len(neck.strides)} levels")
        default: Callable[..., nn.Module] = partial(DenseHead, num_convs=num_convs, prior_prob=prior_prob,
                                                    centerness=True, scales=True)
        head = build_head(head, default=default, neck=neck, num_classes=num_classes)
        super().__init__(backbone=backbone, neck=neck, head=head, num_classes=num_classes,
                         bbox_loss_weight=bbox_loss_weight, nms_thresh=nms_thresh, **detector)
        self.anchor_offset = anchor_offset
        self.regress_ranges = [(float(lo), float(hi)) for lo, hi in regress_ranges]
        self.center_sampling_radius = center_sampling_radius
        self.norm_on_bbox = norm_on_bbox

    def anchors(self, outputs: dict[str, list[Tensor]]) -> list[Tensor]:
        """Per level [H_l * W_l, 4] float32 points as degenerate boxes ``(x, y, x, y)``."""
        ref = outputs["cls_logits"]
        sizes = [(int(x.shape[-2]), int(x.shape[-1])) for x in ref]
        levels = anchor_points_and_boxes(sizes, self.strides, offset=self.anchor_offset, device=ref[0].device,
                                         dtype=torch.float32)
        return [torch.cat([points, points], dim=1) for points, _ in levels]  # [A_l, 4] each

    def assign(self, anchors: list[Tensor], boxes: Tensor, crowd: Tensor | None) -> Tensor:
        """[A] matched box of every point (:func:`fcos_assign`)."""
        return fcos_assign([a[:, :2] for a in anchors], self.strides, boxes, regress_ranges=self.regress_ranges,
                           gt_ignore=crowd, center_sampling_radius=self.center_sampling_radius)

    def decode(self, anchors: Tensor, deltas: Tensor, strides: Tensor,
               max_shape: tuple[int, int] | None = None) -> Tensor:
        """Boxes [P, 4] xyxy from raw (l, t, r, b) outputs ``deltas`` [P, 4] at points ``anchors`` [P, 4]."""
        if self.norm_on_bbox:
            dist = deltas.clamp(min=0) * strides[:, None]  # [P, 4]
        else:
            dist = deltas.clamp(max=math.log(1e4)).exp()  # [P, 4]
        x1, y1 = anchors[:, 0] - dist[:, 0], anchors[:, 1] - dist[:, 1]
        x2, y2 = anchors[:, 2] + dist[:, 2], anchors[:, 3] + dist[:, 3]
        if max_shape is not None:
            height, width = float(max_shape[0]), float(max_shape[1])
            x1, x2 = x1.clamp(min=0.0, max=width), x2.clamp(min=0.0, max=width)
            y1, y2 = y1.clamp(min=0.0, max=height), y2.clamp(min=0.0, max=height)
        return torch.stack([x1, y1, x2, y2], dim=-1)  # [P, 4]

    def box_losses(self, anchors: Tensor, strides: Tensor, deltas: Tensor, ctr: Tensor | None, boxes: Tensor,
                   norm: float) -> dict[str, Tensor]:
        """GIoU weighted by the centerness target, and centerness BCE (:func:`centerness_box_losses`)."""
        return centerness_box_losses(self.decode(anchors, deltas, strides), anchors, ctr, boxes, norm)
