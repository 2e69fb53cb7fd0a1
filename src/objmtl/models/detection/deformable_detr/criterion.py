"""Deformable DETR's set loss: sigmoid focal classification of every query, L1 and GIoU of matched boxes,
for the last decoder layer, each earlier one (auxiliary losses) and, two-stage, the encoder proposals."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import box_convert, generalized_box_iou_loss, sigmoid_focal_loss

from objmtl.models.detection.deformable_detr.matcher import HungarianMatcher

__all__ = ["SetCriterion"]


def _num_boxes(targets: Sequence[dict[str, Tensor]], device: torch.device) -> float:
    """Target boxes of the batch, at least 1: the loss normaliser. Training under DDP averages it over the
    processes (their steps run in lockstep); evaluation keeps each process's own count (ranks may hold unequal
    shares of the data, so a collective call there could wait for a step that never comes)."""
    count = torch.tensor(float(sum(int(t["labels"].numel()) for t in targets)), device=device)
    if torch.is_grad_enabled() and dist.is_available() and dist.is_initialized():
        dist.all_reduce(count)
        count = count / dist.get_world_size()
    return max(float(count), 1.0)


class SetCriterion:
    """Losses of matched predictions, each term summed and divided by the number of target boxes.

    Args:
        num_classes: Foreground classes (no background logit: unmatched queries are all-zero targets).
        matcher: Assigns targets to queries.
        focal_alpha: Focal loss alpha.
        focal_gamma: Focal loss gamma.
        cls_weight: Weight of the focal classification loss in the total.
        bbox_weight: Weight of the L1 box loss.
        giou_weight: Weight of the GIoU box loss.
    """

    def __init__(self, *, num_classes: int, matcher: HungarianMatcher, focal_alpha: float = 0.25,
                 focal_gamma: float = 2.0, cls_weight: float = 2.0, bbox_weight: float = 5.0,
                 giou_weight: float = 2.0) -> None:
        self.num_classes, self.matcher = num_classes, matcher
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma
        self.weights = {"loss_cls": cls_weight, "loss_bbox": bbox_weight, "loss_giou": giou_weight}

    def _weight(self, name: str) -> float:
        """Weight of a term by its base name (``loss_cls_d0`` -> ``loss_cls``)."""
        return next(w for base, w in self.weights.items() if name == base or name.startswith(base + "_"))

    def single(self, logits: Tensor, boxes: Tensor, targets: Sequence[dict[str, Tensor]], num_boxes: float
               ) -> dict[str, Tensor]:
        """``loss_cls``, ``loss_bbox`` and ``loss_giou`` of one set of predictions.

        Args:
            logits: [N, Q, K] class logits.
            boxes: [N, Q, 4] (cx, cy, w, h) in [0, 1].
            targets: N dicts with ``labels`` [G_i] and ``boxes`` [G_i, 4] (cx, cy, w, h) in [0, 1].
            num_boxes: The normaliser.
        """
        matches = self.matcher(logits, boxes, targets)
        batch = torch.cat([torch.full_like(q, i) for i, (q, _) in enumerate(matches)]).to(logits.device)
        query = torch.cat([q for q, _ in matches]).to(logits.device)  # [P]
        labels = torch.cat([t["labels"][j.to(t["labels"].device)] for t, (_, j) in zip(targets, matches, strict=True)])
        target_boxes = torch.cat([t["boxes"][j.to(t["boxes"].device)] for t, (_, j) in zip(targets, matches,
                                                                                          strict=True)])
        onehot = torch.zeros_like(logits, dtype=torch.float32)  # [N, Q, K]
        onehot[batch, query, labels.to(logits.device)] = 1.0
        loss_cls = sigmoid_focal_loss(logits.float(), onehot, alpha=self.focal_alpha, gamma=self.focal_gamma,
                                      reduction="sum") / num_boxes
        if query.numel() == 0:  # zero, connected to the graph so every parameter gets a (zero) gradient
            zero = boxes.sum() * 0.0
            return {"loss_cls": loss_cls, "loss_bbox": zero, "loss_giou": zero}
        matched = boxes[batch, query].float()  # [P, 4]
        target_boxes = target_boxes.to(matched)
        loss_bbox = F.l1_loss(matched, target_boxes, reduction="sum") / num_boxes
        loss_giou = generalized_box_iou_loss(box_convert(matched, "cxcywh", "xyxy"),
                                             box_convert(target_boxes, "cxcywh", "xyxy"), reduction="sum") / num_boxes
        return {"loss_cls": loss_cls, "loss_bbox": loss_bbox, "loss_giou": loss_giou}

    def __call__(self, layer_logits: Tensor, layer_boxes: Tensor, targets: Sequence[dict[str, Tensor]], *,
                 enc_logits: Tensor | None = None, enc_boxes: Tensor | None = None) -> dict[str, Tensor]:
        """All losses.

        Args:
            layer_logits: [D, N, Q, K] per decoder layer (the last is the model's prediction).
            layer_boxes: [D, N, Q, 4] per decoder layer.
            targets: see :meth:`single`.
            enc_logits: Two-stage: [N, S, K] encoder proposal logits.
            enc_boxes: Two-stage: [N, S, 4] encoder proposal boxes.

        Returns:
            ``loss`` (weighted sum of all terms), the last layer's ``loss_cls``, ``loss_bbox``, ``loss_giou``,
            the same for each earlier layer d with suffix ``_d{d}`` and for the proposals with ``_enc``.
        """
        num_boxes = _num_boxes(targets, layer_logits.device)
        terms = self.single(layer_logits[-1], layer_boxes[-1], targets, num_boxes)
        for d in range(layer_logits.shape[0] - 1):
            aux = self.single(layer_logits[d], layer_boxes[d], targets, num_boxes)
            terms.update({f"{k}_d{d}": v for k, v in aux.items()})
        if enc_logits is not None and enc_boxes is not None:
            enc = self.single(enc_logits, enc_boxes, targets, num_boxes)
            terms.update({f"{k}_enc": v for k, v in enc.items()})
        total = sum(self._weight(k) * v for k, v in terms.items())
        return {"loss": total, **terms}
