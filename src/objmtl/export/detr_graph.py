"""The ONNX graph of a Deformable DETR: images in, the top detections out, in the in-graph-NMS layout.

Outputs as :class:`~objmtl.export.graphs.DetectorGraph` with ``nms="onnx"``, so ``objmtl-predict`` and
``--verify`` read them unchanged: ``OUTPUT__0`` boxes [B, D, 4] xyxy input pixels, ``OUTPUT__1`` scores
[B, D], ``OUTPUT__2`` labels [B, D] int64, ``OUTPUT__3`` count [B] int64; D = ``max_detections`` (the top
(query, class) pairs; a set predictor needs no NMS, so every slot is filled, best first).

The graph's one input is the padded batch, as for the dense detectors. Deformable DETR also needs each
image's valid size (its boxes are fractions of it, and the padding is masked): the graph reads it from the
padding, the trailing rows and columns that equal the pad value in all three channels. That value is the one
the training collate and :class:`~objmtl.export.preprocess.Preprocessor` pad with: 0 after normalisation,
``255 * mean`` with ``--bake-norm`` (floored for ``--uint8``). No 8-bit pixel normalises to exactly 0 in all
three channels, so the sizes are those the evaluation passes (a test checks it on real batches); only a
``--uint8`` image whose last rows are exactly the pad colour would be taken as smaller.

Batch, height and width stay dynamic: the level sizes, masks, reference points and valid ratios all come
from traced shapes (see :mod:`objmtl.ops.ms_deform_attn_module`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from objmtl.models.detection.deformable_detr.inference import topk_detections

__all__ = ["DetrGraph", "content_sizes"]


def content_sizes(images: Tensor, pad_value: Tensor) -> Tensor:
    """[B, 2] (h, w) of each image's content: up to its last row / column with a pixel other than the pad.

    Args:
        images: [B, 3, H, W] padded at the bottom and right.
        pad_value: [1, 3, 1, 1] (or broadcastable) pad colour.

    Returns:
        [B, 2] int64, at least 1.
    """
    content = (images != pad_value).to(torch.float32).amax(1)  # [B, H, W] 1 where some channel differs
    rows, cols = content.amax(2), content.amax(1)  # [B, H], [B, W]
    ys = torch.arange(1, rows.shape[1] + 1, device=images.device, dtype=torch.float32)
    xs = torch.arange(1, cols.shape[1] + 1, device=images.device, dtype=torch.float32)
    h = (rows * ys).amax(1).clamp(min=1.0)
    w = (cols * xs).amax(1).clamp(min=1.0)
    return torch.stack([h, w], 1).to(torch.int64)


class DetrGraph(nn.Module):
    """A :class:`~objmtl.models.detection.DeformableDETR` with the valid sizes and top-k decoding in the graph.

    Args:
        model: The trained model (eval mode).
        normalize: :class:`~objmtl.export.graphs.Normalize` of the export (baked or identity).
    """

    num_outputs = 4

    def __init__(self, *, model: nn.Module, normalize: nn.Module) -> None:
        super().__init__()
        self.model, self.normalize = model, normalize

    def _pad_value(self, x: Tensor) -> Tensor:
        """The raw input's pad colour [1, 3, 1, 1] (see the module docstring)."""
        if not getattr(self.normalize, "baked", False):
            return torch.zeros(1, 3, 1, 1, device=x.device)
        mean = self.normalize.mean  # [1, 3, 1, 1] 255 * mean
        return mean.floor() if x.dtype == torch.uint8 else mean

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """[B, 3, H, W] -> boxes [B, D, 4], scores [B, D], labels [B, D], count [B]."""
        sizes = content_sizes(x.float(), self._pad_value(x))
        out = self.model(self.normalize(x), sizes)
        logits, boxes = out["logits"][-1], out["boxes"][-1]
        k = min(int(self.model.max_detections), int(logits.shape[1]) * int(logits.shape[2]))
        xyxy, scores, labels = topk_detections(logits, boxes, sizes, k)
        count = torch.full_like(labels[:, 0], 1) * k
        return xyxy, scores, labels, count
