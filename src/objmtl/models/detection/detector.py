"""The dense one-stage detector's shared machinery: backbone -> neck -> head, the batch loss loop and the
post-processing. Each method holds its own rules in a subclass: ATSS (``atss.py``), FCOS (``fcos.py``) and
RetinaNet (``retinanet.py``) say where the priors sit (:meth:`DenseDetector.anchors`), which box each prior
learns (``assign``), how outputs become boxes (``decode``) and what the box losses are (``box_losses``).

Shared by all: sigmoid focal loss over every non-ignored prior divided by the number of positives, plus
``bbox_loss_weight`` times the subclass's ``loss_bbox`` (and its other terms); at inference, per-level top-k,
score threshold, class-wise NMS. Scores are ``sigmoid(cls)``, times ``sigmoid(centerness)`` for a head with
a centerness output.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.ops import batched_nms, sigmoid_focal_loss

from objmtl.models.detection.atss_assigner import IGNORED
from objmtl.models.detection.fpn import FPN

__all__ = ["DenseDetector", "Part", "build_head", "build_neck"]

Part = nn.Module | Callable[..., nn.Module] | None
"""A neck or head given to a detector: a module, a factory of one (a config node with ``_partial_: true``),
or None for the detector's default."""


def _flatten(x: Tensor) -> Tensor:
    """[N, C, H, W] -> [N, H * W, C], locations in row-major order as the anchors."""
    n, c = x.shape[:2]
    return x.permute(0, 2, 3, 1).reshape(n, -1, c)  # [N, H * W, C]


def build_neck(neck: Part, *, backbone: nn.Module, channels: int) -> nn.Module:
    """``neck`` if a module; else ``neck`` (default :class:`FPN` with ``channels`` outputs) called with the
    backbone's ``in_channels`` and ``in_strides``. The neck must declare ``strides`` and ``out_channels``."""
    if isinstance(neck, nn.Module):
        return neck
    if neck is None:
        return FPN(in_channels=backbone.out_channels, in_strides=backbone.strides, out_channels=channels)
    return neck(in_channels=backbone.out_channels, in_strides=backbone.strides)


def build_head(head: Part, *, default: Callable[..., nn.Module], neck: nn.Module, num_classes: int) -> nn.Module:
    """``head`` if a module; else ``head`` (or ``default``) called with the neck's ``in_channels``,
    ``num_classes`` and ``num_levels``."""
    if isinstance(head, nn.Module):
        return head
    return (head or default)(in_channels=int(neck.out_channels[0]), num_classes=num_classes,
                             num_levels=len(neck.strides))


class DenseDetector(nn.Module, ABC):
    """Backbone, neck and head with dense priors; a subclass gives the priors, assignment, decoding and box losses.

    What tasks and export use: ``forward``, ``loss``, ``postprocess``, ``num_classes``, ``strides`` (the
    neck's), ``anchors()``, ``decode()``, ``anchor_offset`` (set by the subclass: where a prior sits in
    its cell, in strides) and the thresholds below.

    Args:
        backbone: Maps [N, 3, H, W] to a list of feature maps.
        neck: Maps the backbone's maps to pyramid levels and declares ``strides``.
        head: Maps the levels to ``(cls_logits, bbox_deltas[, centerness])`` lists (see :class:`DenseHead`).
        num_classes: Foreground classes.
        bbox_loss_weight: Weight of ``loss_bbox`` in the total.
        nms_thresh: IoU above which NMS drops the lower-scored box of the same class.
        focal_alpha: Focal loss alpha.
        focal_gamma: Focal loss gamma.
        score_thresh: Minimum score of a detection.
        topk_per_level: Candidates kept per level before NMS.
        max_detections: Detections kept per image.
    """

    kind = "det"
    anchor_offset: float

    def __init__(
        self,
        *,
        backbone: nn.Module,
        neck: nn.Module,
        head: nn.Module,
        num_classes: int,
        bbox_loss_weight: float,
        nms_thresh: float,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        score_thresh: float = 0.05,
        topk_per_level: int = 1000,
        max_detections: int = 100,
    ) -> None:
        super().__init__()
        self.backbone, self.neck, self.head = backbone, neck, head
        self.num_classes = num_classes
        self.strides: list[int] = [int(s) for s in neck.strides]
        self.focal_alpha, self.focal_gamma, self.bbox_loss_weight = focal_alpha, focal_gamma, bbox_loss_weight
        self.score_thresh, self.nms_thresh = score_thresh, nms_thresh
        self.topk_per_level, self.max_detections = topk_per_level, max_detections

    def forward(self, images: Tensor) -> dict[str, list[Tensor]]:
        """Raw per-level outputs.

        Args:
            images: [N, 3, H, W].

        Returns:
            ``cls_logits`` [N, A_loc * num_classes, H_l, W_l], ``bbox_deltas`` [N, A_loc * 4, H_l, W_l] and,
            for heads with centerness, ``centerness`` [N, 1, H_l, W_l], one tensor per level (A_loc anchors
            per location).
        """
        outs = self.head(self.neck(self.backbone(images)))
        return dict(zip(("cls_logits", "bbox_deltas", "centerness"), outs, strict=False))

    @abstractmethod
    def anchors(self, outputs: dict[str, list[Tensor]]) -> list[Tensor]:
        """Per level [H_l * W_l * A_loc, 4] xyxy float32 priors (exact pixels also under fp16/bf16 autocast),
        in the order of :meth:`_flat`'s rows."""

    @abstractmethod
    def assign(self, anchors: list[Tensor], boxes: Tensor, crowd: Tensor | None) -> Tensor:
        """Matched box of every prior of one image.

        Args:
            anchors: :meth:`anchors`' per-level [A_l, 4].
            boxes: [G, 4] xyxy, crowd boxes included.
            crowd: [G] bool or None.

        Returns:
            [A] long: the matched row of ``boxes``, ``NEGATIVE`` (-1) or ``IGNORED`` (-2).
        """

    @abstractmethod
    def decode(self, anchors: Tensor, deltas: Tensor, strides: Tensor,
               max_shape: tuple[int, int] | None = None) -> Tensor:
        """Boxes [P, 4] xyxy of regression outputs ``deltas`` [P, 4] at ``anchors`` [P, 4] of levels with
        ``strides`` [P], clipped to ``max_shape`` (h, w) if given."""

    @abstractmethod
    def box_losses(self, anchors: Tensor, strides: Tensor, deltas: Tensor, ctr: Tensor | None, boxes: Tensor,
                   norm: float) -> dict[str, Tensor]:
        """Regression (and centerness) losses of the positives.

        Args:
            anchors: [P, 4] positive priors (P >= 1).
            strides: [P] their levels' strides.
            deltas: [P, 4] their regression outputs.
            ctr: [P] their centerness logits, or None for a head without centerness.
            boxes: [P, 4] their matched boxes.
            norm: Loss normaliser, ``max(P, 1)`` summed over the batch.

        Returns:
            ``loss_bbox`` and any other terms (added to the total unweighted).
        """

    def _strides(self, per_level: list[Tensor]) -> Tensor:
        """[A] stride of every anchor of the concatenated levels."""
        return torch.cat([a.new_full((a.shape[0],), float(s)) for a, s in zip(per_level, self.strides,
                                                                                 strict=True)])

    def _flat(self, x: Tensor, last: int) -> Tensor:
        """[N, A_loc * last, H, W] -> [N, H * W * A_loc, last] (location-major, then anchor, as the anchors)."""
        return _flatten(x.float()).reshape(x.shape[0], -1, last)  # [N, H * W * A_loc, last]

    def loss(self, outputs: dict[str, list[Tensor]], targets: Sequence[dict[str, Any]]) -> dict[str, Tensor]:
        """Losses of a batch: focal classification over the non-ignored anchors / positives, plus
        :meth:`box_losses`.

        Args:
            outputs: :meth:`forward`'s result for N images.
            targets: N dicts with ``boxes`` [G, 4] xyxy input pixels, ``labels`` [G] in [0, num_classes) and
                optionally ``iscrowd`` [G] (crowd boxes make no positives; anchors inside them are ignored).

        Returns:
            ``loss`` (the weighted total), ``loss_cls``, ``loss_bbox`` (unweighted) and the other terms of
            :meth:`box_losses` (``loss_centerness`` for ATSS and FCOS), each a scalar.
        """
        per_level = self.anchors(outputs)
        anchors = torch.cat(per_level)  # [A, 4]
        strides = self._strides(per_level)  # [A]
        cls = torch.cat([self._flat(x, self.num_classes) for x in outputs["cls_logits"]], dim=1)  # [N, A, K]
        deltas = torch.cat([self._flat(x, 4) for x in outputs["bbox_deltas"]], dim=1)  # [N, A, 4]
        has_ctr = "centerness" in outputs
        ctr = torch.cat([_flatten(x.float()) for x in outputs["centerness"]], dim=1)[..., 0] if has_ctr else None
        n, num_anchors = cls.shape[:2]
        if len(targets) != n:
            raise ValueError(f"{n} images but {len(targets)} targets")
        cls_targets = torch.zeros_like(cls)  # [N, A, K]
        valid = torch.ones(n, num_anchors, dtype=torch.bool, device=cls.device)  # [N, A]
        positive = torch.zeros_like(valid)  # [N, A]
        matched_boxes = anchors.new_zeros(n, num_anchors, 4)  # [N, A, 4]
        for i, target in enumerate(targets):
            boxes = target["boxes"].to(anchors).reshape(-1, 4)  # [G, 4]
            labels = target["labels"].to(cls.device).long()  # [G]
            crowd = target.get("iscrowd")
            crowd = None if crowd is None else crowd.to(device=cls.device, dtype=torch.bool)
            matched = self.assign(per_level, boxes, crowd)  # [A]
            valid[i] = matched != IGNORED
            pos = matched >= 0
            if bool(pos.any()):
                rows = torch.nonzero(pos).squeeze(1)  # [P_i]
                gt = matched[rows]  # [P_i]
                cls_targets[i, rows, labels[gt]] = 1.0
                matched_boxes[i, rows] = boxes[gt]
                positive[i] = pos
        num_pos = int(positive.sum())
        norm = float(max(num_pos, 1))
        loss_cls = sigmoid_focal_loss(cls[valid], cls_targets[valid], alpha=self.focal_alpha,
                                      gamma=self.focal_gamma, reduction="sum") / norm
        if num_pos > 0:
            box = self.box_losses(anchors.expand(n, -1, -1)[positive], strides.expand(n, -1)[positive],
                                  deltas[positive], ctr[positive] if ctr is not None else None,
                                  matched_boxes[positive], norm)
        else:  # zero, but connected to the graph so every parameter gets a (zero) gradient
            box = {"loss_bbox": deltas.sum() * 0.0}
            if ctr is not None:
                box["loss_centerness"] = ctr.sum() * 0.0
        total = loss_cls + self.bbox_loss_weight * box["loss_bbox"]
        for name, term in box.items():
            if name != "loss_bbox":
                total = total + term
        return {"loss": total, "loss_cls": loss_cls, **box}

    @torch.no_grad()
    def postprocess(self, outputs: dict[str, list[Tensor]], image_sizes: Tensor) -> list[dict[str, Tensor]]:
        """Detections of each image: per-level top-k, score threshold, class-wise NMS, ``max_detections``.

        Args:
            outputs: :meth:`forward`'s result for N images.
            image_sizes: [N, 2] valid (h, w) of each (padded) image; boxes are clipped to it.

        Returns:
            N dicts: ``boxes`` [D, 4] xyxy input pixels, ``scores`` [D] and ``labels`` [D] long, D <=
            ``max_detections``, highest score first.
        """
        per_level = self.anchors(outputs)
        results = []
        for i in range(int(image_sizes.shape[0])):
            h, w = (int(v) for v in image_sizes[i])
            boxes, scores, labels = [], [], []
            for lvl, anchors in enumerate(per_level):
                cls = self._flat(outputs["cls_logits"][lvl][i : i + 1], self.num_classes)[0]  # [A_l, K]
                deltas = self._flat(outputs["bbox_deltas"][lvl][i : i + 1], 4)[0]  # [A_l, 4]
                score = cls.sigmoid()  # [A_l, K]
                if "centerness" in outputs:
                    score = score * _flatten(outputs["centerness"][lvl][i : i + 1].float())[0].sigmoid()
                score = score.flatten()  # [A_l * K]
                keep = torch.nonzero(score > self.score_thresh).squeeze(1)  # [M]
                top, order = score[keep].topk(min(self.topk_per_level, int(keep.numel())))
                keep = keep[order]
                idx = torch.div(keep, self.num_classes, rounding_mode="floor")  # anchor of each candidate
                stride = anchors.new_full((int(idx.numel()),), float(self.strides[lvl]))  # [m]
                boxes.append(self.decode(anchors[idx], deltas[idx], stride, max_shape=(h, w)))  # [m, 4]
                scores.append(top)
                labels.append(keep % self.num_classes)
            all_boxes, all_scores, all_labels = torch.cat(boxes), torch.cat(scores), torch.cat(labels)
            kept = batched_nms(all_boxes, all_scores, all_labels, self.nms_thresh)[: self.max_detections]
            results.append({"boxes": all_boxes[kept], "scores": all_scores[kept], "labels": all_labels[kept]})
        return results
