"""One-to-one assignment of predictions to ground-truth boxes (the Hungarian algorithm on a matching cost)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor
from torchvision.ops import box_convert, generalized_box_iou

__all__ = ["HungarianMatcher", "focal_class_cost"]


def focal_class_cost(logits: Tensor, labels: Tensor, *, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Cost [Q, G] of giving each query each target's class: the focal loss of predicting it positive minus
    that of predicting it negative (lower = the query is more confident in the class).

    Args:
        logits: [Q, K] class logits.
        labels: [G] target classes.
    """
    prob = logits.sigmoid()[:, labels]  # [Q, G]
    eps = 1e-8
    neg = (1 - alpha) * prob.pow(gamma) * -(1 - prob + eps).log()
    pos = alpha * (1 - prob).pow(gamma) * -(prob + eps).log()
    return pos - neg


class HungarianMatcher:
    """Matches each image's targets to distinct queries, minimising a weighted sum of costs.

    Cost = ``cost_class`` x focal class cost + ``cost_bbox`` x L1 distance of the (cx, cy, w, h) boxes +
    ``cost_giou`` x (-GIoU). Queries left unmatched are background.

    Args:
        cost_class: Weight of the focal class cost.
        cost_bbox: Weight of the L1 box distance.
        cost_giou: Weight of the negative generalised IoU.
        focal_alpha: Focal alpha of the class cost.
        focal_gamma: Focal gamma of the class cost.
    """

    def __init__(self, *, cost_class: float = 2.0, cost_bbox: float = 5.0, cost_giou: float = 2.0,
                 focal_alpha: float = 0.25, focal_gamma: float = 2.0) -> None:
        if cost_class == 0 and cost_bbox == 0 and cost_giou == 0:
            raise ValueError("HungarianMatcher: all costs are zero")
        self.cost_class, self.cost_bbox, self.cost_giou = cost_class, cost_bbox, cost_giou
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma

    def cost(self, logits: Tensor, boxes: Tensor, labels: Tensor, target_boxes: Tensor) -> Tensor:
        """Cost matrix [Q, G] of one image: ``logits`` [Q, K], ``boxes`` [Q, 4] and ``target_boxes`` [G, 4]
        (cx, cy, w, h) in [0, 1], ``labels`` [G]."""
        logits, boxes, target_boxes = logits.float(), boxes.float(), target_boxes.float()
        c_class = focal_class_cost(logits, labels, alpha=self.focal_alpha, gamma=self.focal_gamma)
        c_bbox = torch.cdist(boxes, target_boxes, p=1)
        c_giou = -generalized_box_iou(box_convert(boxes, "cxcywh", "xyxy"),
                                      box_convert(target_boxes, "cxcywh", "xyxy"))
        return self.cost_class * c_class + self.cost_bbox * c_bbox + self.cost_giou * c_giou

    @torch.no_grad()
    def __call__(self, logits: Tensor, boxes: Tensor, targets: Sequence[dict[str, Tensor]]
                 ) -> list[tuple[Tensor, Tensor]]:
        """Match a batch.

        Args:
            logits: [N, Q, K] class logits.
            boxes: [N, Q, 4] predicted (cx, cy, w, h) in [0, 1].
            targets: N dicts with ``labels`` [G_i] and ``boxes`` [G_i, 4] (cx, cy, w, h) in [0, 1].

        Returns:
            Per image ``(query_index, target_index)``, two long tensors of length min(Q, G_i) on the CPU.
        """
        matches = []
        for i, target in enumerate(targets):
            if target["labels"].numel() == 0:
                empty = torch.zeros(0, dtype=torch.long)
                matches.append((empty, empty))
                continue
            cost = self.cost(logits[i], boxes[i], target["labels"], target["boxes"])
            cost = torch.nan_to_num(cost, nan=1e8, posinf=1e8, neginf=-1e8).cpu().numpy()
            rows, cols = linear_sum_assignment(cost)
            matches.append((torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)))
        return matches
