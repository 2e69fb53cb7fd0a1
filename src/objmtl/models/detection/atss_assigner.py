"""Adaptive Training Sample Selection (Zhang et al., CVPR 2020), as mmdet's ``ATSSAssigner`` computes it.

For each real (non-crowd) ground-truth box:

1. on every level, the ``min(topk, A_l)`` anchors whose centres are nearest (L2) to the box centre are
   candidates;
2. the IoU threshold is ``mean + std`` of the candidates' IoUs, with the unbiased std (``torch.std``'s
   default, as mmdet); with a single candidate in all, std is taken as 0 (mmdet's would be NaN, leaving that
   box without positives);
3. candidates with ``IoU >= threshold`` whose centre lies inside the box by more than ``center_eps`` pixels
   on all four sides (mmdet: ``min(l, t, r, b) > 0.01``) are positives; a centre on the border is not.

An anchor positive for several boxes goes to the one with the highest IoU (the lowest index on a tie).

Crowd boxes (``gt_ignore``, COCO's ``iscrowd``) never make positives and take no part in steps 1-3, so real
boxes get the same positives with or without them. Anchors that are not positive and have more than
``ignore_iof_thr`` (default 0.5) of their own area inside a crowd box (IoF, intersection over the anchor's
area, as mmdet's ``ignore_iof_thr``) are ignored (-2): neither positive nor negative in the loss. IoF rather
than IoU, because a crowd region is usually much larger than one anchor, whose IoU with it stays small even
when the anchor lies wholly inside. mmdet instead also removes such anchors from the real boxes' candidate
sets, and its ATSS configs leave the rule off (``ignore_iof_thr=-1``: crowd boxes dropped, their anchors
negatives).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.ops import box_iou

__all__ = ["IGNORED", "NEGATIVE", "AssignResult", "atss_assign"]

NEGATIVE = -1  # matched_gt of a background anchor
IGNORED = -2  # matched_gt of an anchor left out of the loss (covered by a crowd box)


@dataclass(frozen=True)
class AssignResult:
    """Per-anchor assignment, anchors in the order of the concatenated levels.

    Attributes:
        matched_gt: ``(A,)`` long: the row of ``gt_boxes`` an anchor is positive for, ``NEGATIVE`` (-1) or
            ``IGNORED`` (-2).
        max_iou: ``(A,)``: for positives, the IoU with the matched box; for the others, the largest IoU with
            any real (non-crowd) box, 0 without any.
    """

    matched_gt: Tensor
    max_iou: Tensor

    @property
    def positive(self) -> Tensor:
        """``(A,)`` bool: anchors matched to a box."""
        return self.matched_gt >= 0


def _iof(anchors: Tensor, regions: Tensor) -> Tensor:
    """``(A, C)``: intersection of each anchor ``(A, 4)`` with each region ``(C, 4)`` / the anchor's area."""
    top_left = torch.maximum(anchors[:, None, :2], regions[None, :, :2])  # (A, C, 2)
    bottom_right = torch.minimum(anchors[:, None, 2:], regions[None, :, 2:])  # (A, C, 2)
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=-1)  # (A, C)
    area = (anchors[:, 2:] - anchors[:, :2]).prod(dim=-1)  # (A,)
    return inter / area.clamp(min=torch.finfo(anchors.dtype).eps)[:, None]


def atss_assign(
    anchors: Sequence[Tensor],
    gt_boxes: Tensor,
    *,
    gt_ignore: Tensor | None = None,
    topk: int = 9,
    ignore_iof_thr: float = 0.5,
    center_eps: float = 0.01,
) -> AssignResult:
    """Assigns anchors of one image to its ground-truth boxes with ATSS (see the module docstring).

    Args:
        anchors: Per level ``(A_l, 4)`` xyxy anchors; ``A = sum(A_l)``. A level may be empty.
        gt_boxes: ``(G, 4)`` xyxy ground-truth boxes, crowd boxes included; ``G`` may be 0.
        gt_ignore: ``(G,)`` bool, True for crowd boxes; ``None`` means none.
        topk: Candidates per level and box (capped by the level's anchor count).
        ignore_iof_thr: Anchors with IoF above this with a crowd box are ignored unless positive.
        center_eps: Margin, in pixels, by which a positive's centre must lie inside its box.

    Returns:
        The assignment of the ``A`` anchors.
    """
    if topk < 1:
        raise ValueError(f"topk must be >= 1, got {topk}")
    if gt_boxes.ndim != 2 or gt_boxes.shape[-1] != 4:
        raise ValueError(f"gt_boxes must be (G, 4), got {tuple(gt_boxes.shape)}")
    if gt_ignore is None:
        gt_ignore = torch.zeros(gt_boxes.shape[0], dtype=torch.bool, device=gt_boxes.device)
    if gt_ignore.shape != gt_boxes.shape[:1]:
        raise ValueError(f"gt_ignore must be ({gt_boxes.shape[0]},), got {tuple(gt_ignore.shape)}")
    flat = torch.cat(list(anchors), dim=0)  # (A, 4)
    gt_boxes = gt_boxes.to(flat)
    gt_ignore = gt_ignore.to(device=flat.device, dtype=torch.bool)
    real_rows = torch.nonzero(~gt_ignore).squeeze(1)  # (R,) rows of gt_boxes that are real boxes
    real, crowd = gt_boxes[real_rows], gt_boxes[gt_ignore]  # (R, 4), (C, 4)
    num_anchors, num_real = flat.shape[0], real.shape[0]

    matched = torch.full((num_anchors,), NEGATIVE, dtype=torch.long, device=flat.device)
    max_iou = flat.new_zeros(num_anchors)
    if num_real > 0 and num_anchors > 0:
        iou = box_iou(flat, real)  # (A, R)
        centres = (flat[:, :2] + flat[:, 2:]) * 0.5  # (A, 2)
        gt_centres = (real[:, :2] + real[:, 2:]) * 0.5  # (R, 2)
        # Squared distances rank like mmdet's distances.
        dist2 = (centres[:, None, :] - gt_centres[None, :, :]).pow(2).sum(dim=-1)  # (A, R)
        candidates = []
        start = 0
        for level in anchors:
            count = level.shape[0]
            if count > 0:
                nearest = dist2[start : start + count].topk(min(topk, count), dim=0, largest=False).indices
                candidates.append(nearest + start)  # (k_l, R) rows into the flat anchors
            start += count
        cand = torch.cat(candidates, dim=0)  # (K, R), K = sum_l min(topk, A_l)
        cand_iou = torch.gather(iou, 0, cand)  # (K, R)
        std = cand_iou.std(dim=0) if cand.shape[0] > 1 else torch.zeros_like(cand_iou[0])  # (R,)
        threshold = cand_iou.mean(dim=0) + std  # (R,)
        cx = torch.gather(centres[:, 0, None].expand(-1, num_real), 0, cand)  # (K, R)
        cy = torch.gather(centres[:, 1, None].expand(-1, num_real), 0, cand)  # (K, R)
        margin = torch.stack([cx - real[:, 0], cy - real[:, 1], real[:, 2] - cx, real[:, 3] - cy]).amin(0)
        cand_pos = (cand_iou >= threshold[None, :]) & (margin > center_eps)  # (K, R)
        # Candidate rows are distinct within a column, so the scatter writes each cell at most once.
        pos = torch.zeros_like(iou, dtype=torch.bool).scatter_(0, cand, cand_pos)  # (A, R)
        best_iou, best = torch.where(pos, iou, -1.0).max(dim=1)  # (A,); IoU >= 0 beats -1
        is_pos = pos.any(dim=1)  # (A,)
        matched = torch.where(is_pos, real_rows[best], matched)
        max_iou = torch.where(is_pos, best_iou, iou.amax(dim=1))
    if crowd.shape[0] > 0 and num_anchors > 0:
        covered = _iof(flat, crowd).amax(dim=1) > ignore_iof_thr  # (A,)
        matched = torch.where(covered & (matched < 0), IGNORED, matched)
    return AssignResult(matched_gt=matched, max_iou=max_iou)
