"""Padding masks from image sizes, and the top-k decoding of a set of predictions into pixel boxes.

Both are plain tensor code without data-dependent branches: the ONNX graph of a Deformable DETR
(:mod:`objmtl.export.detr_graph`) traces them as they are.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import box_convert

__all__ = ["padding_mask", "topk_detections"]


def padding_mask(image_sizes: Tensor, height: Tensor | int, width: Tensor | int) -> Tensor:
    """[N, H, W] bool, True outside each image's valid (h, w) top-left region of ``image_sizes`` [N, 2]."""
    ys = torch.arange(height, device=image_sizes.device)
    xs = torch.arange(width, device=image_sizes.device)
    return (ys[None, :, None] >= image_sizes[:, 0, None, None]) | (xs[None, None, :] >= image_sizes[:, 1, None, None])


def topk_detections(logits: Tensor, boxes: Tensor, image_sizes: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """The ``k`` best (query, class) pairs of each image, as boxes in input pixels.

    Args:
        logits: [N, Q, K] class logits.
        boxes: [N, Q, 4] (cx, cy, w, h) in [0, 1] of each image's valid size.
        image_sizes: [N, 2] valid (h, w) in input pixels.
        k: Detections per image, at most Q * K.

    Returns:
        ``boxes`` [N, k, 4] xyxy input pixels clipped to the valid image, ``scores`` [N, k] (sigmoid, best
        first) and ``labels`` [N, k] int64.
    """
    num_classes = logits.shape[2]
    scores, index = logits.float().sigmoid().flatten(1).topk(k, dim=1)  # [N, k]
    query = torch.div(index, num_classes, rounding_mode="floor")
    labels = index % num_classes
    picked = torch.gather(boxes.float(), 1, query[..., None].expand(-1, -1, 4))  # [N, k, 4]
    size = image_sizes.to(torch.float32)
    limits = torch.stack([size[:, 1], size[:, 0], size[:, 1], size[:, 0]], -1)[:, None]  # [N, 1, 4]
    xyxy = box_convert(picked, "cxcywh", "xyxy") * limits
    return torch.minimum(xyxy.clamp(min=0.0), limits), scores, labels
