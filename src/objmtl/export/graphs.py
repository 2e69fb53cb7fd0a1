"""The modules that ``objmtl-export onnx`` traces: a trained model plus what deployment needs around it.

Every graph takes one image batch ``INPUT__0`` [B, 3, H, W] and returns plain tensors
(``OUTPUT__0``, ``OUTPUT__1``, ...). With ``bake_norm`` the graph takes RGB pixel values in
[0, 255] (float32, or uint8 with ``uint8_input``) and normalises them itself; otherwise it takes
what the eval transform feeds the model (pixels / 255, minus mean, over std).

Detection (any :class:`~objmtl.models.detection.DenseDetector`) is written for tracing with
dynamic batch, height and width: anchors come from the traced feature-map sizes (a per-level
constant anchor shape plus a grid built with ``arange``), boxes are clipped to the traced input
size, and nothing branches on tensor values. Two layouts:

- ``nms="none"`` (ObjectiveMTL's): ``OUTPUT__0`` [B, A, 4 + K]: per anchor the decoded box (xyxy,
  input pixels) and the K class scores (sigmoid, times centerness where the head has it); A grows
  with the input size (a dynamic axis); NMS is the caller's.
- ``nms="onnx"``: the model's own post-processing (per-level top-k, score threshold, class-wise
  NMS, ``max_detections``) in the graph, NMS as ONNX ``NonMaxSuppression``: ``OUTPUT__0`` boxes
  [B, D, 4], ``OUTPUT__1`` scores [B, D], ``OUTPUT__2`` labels [B, D] (int64, -1 = empty slot),
  ``OUTPUT__3`` count [B] (int64); D = ``max_detections``, best first, empty slots zero.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.onnx.operators import shape_as_tensor

from objmtl.export.onnx_nms import onnx_nms

__all__ = ["ClassifierGraph", "DetectorGraph", "Normalize", "PoseGraph", "SegmenterGraph", "output_names"]


class Normalize(nn.Module):
    """[0, 255] RGB (any dtype) -> the model's input: ``(x - 255 * mean) / (255 * std)``; or float as is."""

    def __init__(self, *, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        super().__init__()
        self.baked = mean is not None and std is not None
        m = torch.tensor(list(mean or (0.0, 0.0, 0.0)), dtype=torch.float32).view(1, -1, 1, 1) * 255.0
        s = torch.tensor(list(std or (1.0, 1.0, 1.0)), dtype=torch.float32).view(1, -1, 1, 1) * 255.0
        self.register_buffer("mean", m, persistent=False)
        self.register_buffer("std", s, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        x = x.float()
        return (x - self.mean) / self.std if self.baked else x


class ClassifierGraph(nn.Module):
    """``OUTPUT__0``: class logits [B, K] (softmax gives the probabilities ``objmtl-predict`` reports)."""

    def __init__(self, *, model: nn.Module, normalize: Normalize) -> None:
        super().__init__()
        self.model, self.normalize = model, normalize

    def forward(self, x: Tensor) -> Tensor:
        return self.model(self.normalize(x))


class SegmenterGraph(nn.Module):
    """``OUTPUT__0``: class logits at the input size [B, K, H, W] (argmax gives the class map)."""

    def __init__(self, *, model: nn.Module, normalize: Normalize) -> None:
        super().__init__()
        self.model, self.normalize = model, normalize

    def forward(self, x: Tensor) -> Tensor:
        return self.model(self.normalize(x))["out"]


class PoseGraph(nn.Module):
    """Person crops [B, 3, h, w] -> ``OUTPUT__0``: K keypoint heatmaps [B, K, h / 4, w / 4].

    With ``flip_pairs`` (the run's ``flip_test``), the heatmaps are averaged with those of the mirrored
    crop, mirrored back with left/right swapped, as evaluation does. Decoding (DARK sub-pixel step,
    crop -> image affine) is the caller's: ``objmtl-predict`` does it with
    :func:`objmtl.geometry.heatmaps.decode_heatmaps`, the code the evaluation uses.
    """

    def __init__(self, *, model: nn.Module, normalize: Normalize,
                 flip_pairs: Sequence[Sequence[int]] | None = None) -> None:
        super().__init__()
        self.model, self.normalize = model, normalize
        self.flip_pairs = [list(p) for p in flip_pairs] if flip_pairs is not None else None

    def forward(self, x: Tensor) -> Tensor:
        from objmtl.geometry.heatmaps import flip_heatmaps

        x = self.normalize(x)
        heatmaps = self.model(x)
        if self.flip_pairs is None:
            return heatmaps
        return 0.5 * (heatmaps + flip_heatmaps(self.model(x.flip(-1)), self.flip_pairs))


def _level_grid(feat: Tensor, stride: float, offset: float) -> Tensor:
    """[H * W, 2] (x, y) cell points of a feature map, from its traced size (row-major)."""
    h, w = feat.shape[-2], feat.shape[-1]
    ys = (torch.arange(h, device=feat.device, dtype=torch.float32) + offset) * stride
    xs = (torch.arange(w, device=feat.device, dtype=torch.float32) + offset) * stride
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], dim=-1)


class DetectorGraph(nn.Module):
    """A dense detector with decoding (and optionally NMS) in the graph; see the module docstring."""

    def __init__(self, *, model: nn.Module, normalize: Normalize, nms: str = "onnx") -> None:
        super().__init__()
        if nms not in ("onnx", "none"):
            raise ValueError(f"nms={nms!r}: use onnx or none")
        self.model, self.normalize, self.nms = model, normalize, nms
        # each level's anchors are its cell points plus a constant shape per location: read the shape off a
        # 1 x 1 map, whose only point sits at offset * stride
        with torch.no_grad():
            ones = {"cls_logits": [torch.zeros(1, 1, 1, 1) for _ in model.strides]}
            first = model.anchors(ones)
        shapes = [a.float() - model.anchor_offset * s for a, s in zip(first, model.strides, strict=True)]
        for i, shape in enumerate(shapes):
            self.register_buffer(f"anchor_shape_{i}", shape, persistent=False)  # [A_loc, 4]

    def _dense(self, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Per level: boxes [B, A_l, 4] clipped to the input, scores [B, A_l, K]."""
        m = self.model
        out = m(x)
        b = x.shape[0]
        size = shape_as_tensor(x)  # a Shape node when traced: the limits follow the input size
        limits = size[torch.tensor([3, 2, 3, 2])].to(torch.float32)
        boxes, scores = [], []
        for lvl, stride in enumerate(m.strides):
            cls = out["cls_logits"][lvl]
            shape = getattr(self, f"anchor_shape_{lvl}")  # [A_loc, 4]
            points = _level_grid(cls, float(stride), m.anchor_offset)  # [HW, 2]
            anchors = (points.repeat(1, 2)[:, None, :] + shape[None]).reshape(-1, 4)  # [A_l, 4]
            score = m._flat(cls, m.num_classes).sigmoid()  # [B, A_l, K]
            if "centerness" in out:
                score = score * m._flat(out["centerness"][lvl], 1).sigmoid()
            deltas = m._flat(out["bbox_deltas"][lvl], 4).reshape(-1, 4)  # [B * A_l, 4]
            flat_anchors = anchors[None].expand(b, -1, -1).reshape(-1, 4)
            strides = torch.full_like(flat_anchors[:, 0], float(stride))
            decoded = m.decode(flat_anchors, deltas, strides).reshape(b, -1, 4)
            boxes.append(torch.minimum(decoded.clamp(min=0.0), limits))
            scores.append(score)
        return boxes, scores

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor, Tensor, Tensor]:
        boxes, scores = self._dense(self.normalize(x))
        if self.nms == "none":
            return torch.cat([torch.cat(boxes, 1), torch.cat(scores, 1)], dim=2)
        return self._detections(boxes, scores)

    def _detections(self, boxes: list[Tensor], scores: list[Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        m = self.model
        k, top_k, thr, max_det = m.num_classes, m.topk_per_level, m.score_thresh, m.max_detections
        cand_boxes, cand_scores, cand_labels = [], [], []
        for lvl_boxes, lvl_scores in zip(boxes, scores, strict=True):
            flat = lvl_scores.reshape(lvl_scores.shape[0], -1)  # [B, A_l * K]
            # pad with zeros so that top_k exists at any input size; pads score 0, below any threshold
            padded = torch.cat([flat, flat.new_zeros(flat.shape[0], top_k)], dim=1)
            top, idx = padded.topk(top_k, dim=1)  # [B, T]
            last = torch.full_like(idx, 1) * (lvl_boxes.shape[1] - 1)
            anchor = torch.minimum(torch.div(idx, k, rounding_mode="floor"), last)
            cand_boxes.append(torch.gather(lvl_boxes, 1, anchor[..., None].expand(-1, -1, 4)))
            cand_scores.append(top * (top > thr).to(top.dtype))
            cand_labels.append(idx % k)
        all_boxes, all_scores, labels = torch.cat(cand_boxes, 1), torch.cat(cand_scores, 1), torch.cat(cand_labels, 1)
        n = all_scores.shape[1]
        classes = torch.arange(k, device=labels.device)
        per_class = (labels[:, None, :] == classes[None, :, None]).to(all_scores.dtype) * all_scores[:, None, :]
        selected = onnx_nms(all_boxes, per_class, max_per_class=max_det, iou_threshold=m.nms_thresh,
                            score_threshold=thr)  # [S, 3]: image, class, candidate
        b = all_scores.shape[0]
        flat_index = (selected[:, 0] * k + selected[:, 1]) * n + selected[:, 2]
        kept = per_class.reshape(-1).new_full((b * k * n,), -1.0).scatter(0, flat_index, per_class.reshape(-1)[flat_index])
        kept = torch.cat([kept.reshape(b, k * n), kept.new_full((b, max_det), -1.0)], dim=1)
        top, idx = kept.topk(max_det, dim=1)  # [B, D]
        valid = top > 0
        label = torch.div(idx, n, rounding_mode="floor")
        cand = torch.minimum(idx % n, torch.full_like(idx, 1) * (n - 1))
        out_boxes = torch.gather(all_boxes, 1, cand[..., None].expand(-1, -1, 4)) * valid[..., None].to(top.dtype)
        out_scores = top * valid.to(top.dtype)
        out_labels = torch.where(valid, label, torch.full_like(label, -1))
        return out_boxes, out_scores, out_labels, valid.to(torch.int64).sum(1)


def output_names(graph: nn.Module) -> list[str]:
    """Triton-style output names of a graph: ``OUTPUT__0`` and, for in-graph NMS (or a graph declaring
    ``num_outputs``, as :class:`~objmtl.export.detr_graph.DetrGraph`), more."""
    count = getattr(graph, "num_outputs", 4 if isinstance(graph, DetectorGraph) and graph.nms == "onnx" else 1)
    return [f"OUTPUT__{i}" for i in range(count)]
