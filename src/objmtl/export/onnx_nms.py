"""Class-wise NMS that runs eagerly with torchvision and exports as ONNX ``NonMaxSuppression``.

torchvision's ``batched_nms`` loops in Python over a data-dependent number of boxes, which neither
exporter handles well for a dynamic batch (the dynamo exporter fails on it outright). This op has
ONNX's batched semantics, so one node covers every image and class of a batch:

- ``boxes`` [B, N, 4] xyxy, ``scores`` [B, C, N];
- per image and class, greedy NMS over the boxes scoring above ``score_threshold``, dropping a
  box whose IoU with a kept one exceeds ``iou_threshold``, keeping at most ``max_per_class``;
- returns ``selected`` [S, 3] int64 rows ``(image, class, box)``, image-major, then class, then
  score order (as ONNX Runtime orders them).

The eager forward gives the same rows with :func:`torchvision.ops.nms`; in the legacy (TorchScript)
exporter the ``symbolic`` method replaces it by the ONNX node.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import nms

__all__ = ["onnx_nms"]


class _NonMaxSuppression(torch.autograd.Function):
    @staticmethod
    def forward(ctx, boxes: Tensor, scores: Tensor, max_per_class: int, iou_threshold: float,  # noqa: ANN001
                score_threshold: float) -> Tensor:
        rows = []
        for b in range(boxes.shape[0]):
            for c in range(scores.shape[1]):
                s = scores[b, c]
                cand = torch.nonzero(s > score_threshold).squeeze(1)
                if cand.numel() == 0:
                    continue
                kept = cand[nms(boxes[b, cand].float(), s[cand].float(), iou_threshold)][:max_per_class]
                rows.append(torch.stack([torch.full_like(kept, b), torch.full_like(kept, c), kept], dim=1))
        return torch.cat(rows) if rows else boxes.new_zeros((0, 3), dtype=torch.long)

    @staticmethod
    def symbolic(g, boxes, scores, max_per_class, iou_threshold, score_threshold):  # noqa: ANN001, ANN205
        return g.op("NonMaxSuppression", boxes, scores,
                    g.op("Constant", value_t=torch.tensor([max_per_class], dtype=torch.long)),
                    g.op("Constant", value_t=torch.tensor([iou_threshold], dtype=torch.float)),
                    g.op("Constant", value_t=torch.tensor([score_threshold], dtype=torch.float)),
                    center_point_box_i=0)


def onnx_nms(boxes: Tensor, scores: Tensor, *, max_per_class: int, iou_threshold: float,
             score_threshold: float) -> Tensor:
    """Selected ``(image, class, box)`` rows [S, 3] of class-wise NMS (see the module docstring)."""
    return _NonMaxSuppression.apply(boxes, scores, int(max_per_class), float(iou_threshold), float(score_threshold))
