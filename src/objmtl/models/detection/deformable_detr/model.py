"""Deformable DETR (Zhu et al., ICLR 2021): a backbone's multi-scale maps, a deformable transformer and
per-layer class and box heads, trained with a set loss on Hungarian matches; no anchors and no NMS.

Boxes are (cx, cy, w, h) in [0, 1] of each image's unpadded size (``image_sizes``), as in DETR; padding is
masked everywhere (attention values, position embeddings, valid ratios, the input projections' GroupNorm),
so an image's detections do not depend on how much its batch pads it.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.onnx.operators import shape_as_tensor
from torchvision.ops import box_convert

from objmtl.models.detection.deformable_detr.criterion import SetCriterion
from objmtl.models.detection.deformable_detr.decoder import refine_boxes
from objmtl.models.detection.deformable_detr.inference import padding_mask, topk_detections
from objmtl.models.detection.deformable_detr.layers import MLP, MaskedGroupNorm
from objmtl.models.detection.deformable_detr.matcher import HungarianMatcher
from objmtl.models.detection.deformable_detr.position_encoding import SinePositionEmbedding
from objmtl.models.detection.deformable_detr.transformer import DeformableTransformer

__all__ = ["DeformableDETR"]


class _InputProjection(nn.Module):
    """A conv to ``d_model`` channels, then GroupNorm over the valid cells of the level."""

    def __init__(self, *, conv: nn.Conv2d, norm: MaskedGroupNorm) -> None:
        super().__init__()
        self.conv, self.norm = conv, norm
        nn.init.xavier_uniform_(conv.weight, gain=1)
        nn.init.zeros_(conv.bias)

    def forward(self, x: Tensor, image_mask: Tensor) -> tuple[Tensor, Tensor]:
        """[N, C_in, h, w] and the image's [N, H, W] padding mask -> ([N, d, h', w'], its mask [N, h', w'])."""
        y = self.conv(x)
        mask = F.interpolate(image_mask[:, None].float(), size=y.shape[-2:]).to(torch.bool)[:, 0]
        return self.norm(y, mask), mask


class DeformableDETR(nn.Module):
    """Deformable DETR on a backbone that returns C3-C5 and declares ``out_channels``.

    Args:
        backbone: Maps [N, 3, H, W] to a list of maps (``out_indices: [1, 2, 3]``: strides 8, 16, 32).
        num_classes: Foreground classes.
        d_model: Transformer channels.
        num_heads: Attention heads.
        num_encoder_layers: Encoder layers.
        num_decoder_layers: Decoder layers (each predicts; all but the last give auxiliary losses).
        dim_feedforward: Hidden channels of the feed-forward blocks.
        dropout: Transformer dropout.
        num_feature_levels: Levels fed to the transformer; those beyond the backbone's are stride-2 3 x 3 convs.
        enc_points: Sampling points per head and level in the encoder.
        dec_points: Sampling points per head and level in the decoder.
        num_queries: Object queries (detections considered per image).
        with_box_refine: Each decoder layer refines the previous layer's boxes (separate heads per layer).
        two_stage: Queries start from the encoder's top-scoring proposals.
        aux_loss: Losses on every decoder layer (and the proposals), not only the last.
        norm_groups: GroupNorm groups of the input projections (divides ``d_model``).
        prior_prob: Initial foreground probability of the class heads.
        focal_alpha: Focal alpha (loss and matching cost).
        focal_gamma: Focal gamma (loss and matching cost).
        cls_loss_weight: Weight of the focal classification loss.
        bbox_loss_weight: Weight of the L1 box loss.
        giou_loss_weight: Weight of the GIoU loss.
        match_cost_class: Weight of the class cost in matching.
        match_cost_bbox: Weight of the L1 cost in matching.
        match_cost_giou: Weight of the GIoU cost in matching.
        max_detections: Detections kept per image (top scores over queries x classes).
        backbone_lr_scale: Learning-rate factor of the backbone (see :meth:`param_groups`).
        offsets_lr_scale: Learning-rate factor of the sampling offsets and reference-point projections.
    """

    kind = "det"
    uses_image_sizes = True  # forward takes image_sizes: DetectionTask passes them

    def __init__(self, *, backbone: nn.Module, num_classes: int, d_model: int = 256, num_heads: int = 8,
                 num_encoder_layers: int = 6, num_decoder_layers: int = 6, dim_feedforward: int = 1024,
                 dropout: float = 0.1, num_feature_levels: int = 4, enc_points: int = 4, dec_points: int = 4,
                 num_queries: int = 300, with_box_refine: bool = False, two_stage: bool = False,
                 aux_loss: bool = True, norm_groups: int = 32, prior_prob: float = 0.01, focal_alpha: float = 0.25,
                 focal_gamma: float = 2.0, cls_loss_weight: float = 2.0, bbox_loss_weight: float = 5.0,
                 giou_loss_weight: float = 2.0, match_cost_class: float = 2.0, match_cost_bbox: float = 5.0,
                 match_cost_giou: float = 2.0, max_detections: int = 100, backbone_lr_scale: float = 0.1,
                 offsets_lr_scale: float = 0.1) -> None:
        super().__init__()
        in_channels = [int(c) for c in backbone.out_channels]
        if num_feature_levels < len(in_channels):
            raise ValueError(f"num_feature_levels={num_feature_levels} is below the backbone's {len(in_channels)} "
                             "levels: choose fewer backbone out_indices")
        self.backbone, self.num_classes, self.num_queries = backbone, num_classes, num_queries
        self.with_box_refine, self.two_stage, self.aux_loss = with_box_refine, two_stage, aux_loss
        self.max_detections = max_detections
        self.backbone_lr_scale, self.offsets_lr_scale = backbone_lr_scale, offsets_lr_scale
        projections = [_InputProjection(conv=nn.Conv2d(c, d_model, 1), norm=MaskedGroupNorm(norm_groups, d_model))
                       for c in in_channels]
        for i in range(num_feature_levels - len(in_channels)):
            conv = nn.Conv2d(in_channels[-1] if i == 0 else d_model, d_model, 3, stride=2, padding=1)
            projections.append(_InputProjection(conv=conv, norm=MaskedGroupNorm(norm_groups, d_model)))
        self.input_proj = nn.ModuleList(projections)
        self.position = SinePositionEmbedding(num_pos_feats=d_model // 2)
        self.transformer = DeformableTransformer(
            d_model=d_model, num_heads=num_heads, num_encoder_layers=num_encoder_layers,
            num_decoder_layers=num_decoder_layers, dim_feedforward=dim_feedforward, dropout=dropout,
            num_levels=num_feature_levels, enc_points=enc_points, dec_points=dec_points, num_queries=num_queries,
            two_stage=two_stage)
        self.class_heads, self.box_heads = self._heads(d_model, num_decoder_layers, prior_prob)
        self.criterion = SetCriterion(
            num_classes=num_classes, focal_alpha=focal_alpha, focal_gamma=focal_gamma, cls_weight=cls_loss_weight,
            bbox_weight=bbox_loss_weight, giou_weight=giou_loss_weight,
            matcher=HungarianMatcher(cost_class=match_cost_class, cost_bbox=match_cost_bbox,
                                     cost_giou=match_cost_giou, focal_alpha=focal_alpha, focal_gamma=focal_gamma))

    def _heads(self, d_model: int, num_layers: int, prior_prob: float) -> tuple[nn.ModuleList, nn.ModuleList]:
        """Class and box heads: one shared pair, or (box refinement) one pair per decoder layer, plus the
        proposals' pair for two-stage."""
        class_head = nn.Linear(d_model, self.num_classes)
        nn.init.constant_(class_head.bias, -math.log((1 - prior_prob) / prior_prob))
        box_head = MLP(in_dim=d_model, hidden_dim=d_model, out_dim=4, num_layers=3)
        nn.init.zeros_(box_head.layers[-1].weight)
        nn.init.zeros_(box_head.layers[-1].bias)
        if not self.with_box_refine:
            if not self.two_stage:  # boxes start small around the reference point: sigmoid(-2) ~ 0.12
                nn.init.constant_(box_head.layers[-1].bias[2:], -2.0)
            return nn.ModuleList([class_head]), nn.ModuleList([box_head])
        count = num_layers + (1 if self.two_stage else 0)
        class_heads = nn.ModuleList(copy.deepcopy(class_head) for _ in range(count))
        box_heads = nn.ModuleList(copy.deepcopy(box_head) for _ in range(count))
        if not self.two_stage:  # later layers refine relative to the first layer's boxes
            nn.init.constant_(box_heads[0].layers[-1].bias[2:], -2.0)
        return class_heads, box_heads

    def _head(self, heads: nn.ModuleList, layer: int) -> nn.Module:
        return heads[layer] if len(heads) > 1 else heads[0]

    def forward(self, images: Tensor, image_sizes: Tensor | None = None) -> dict[str, Tensor]:
        """Predictions of every decoder layer.

        Args:
            images: [N, 3, H, W], padded at the bottom and right.
            image_sizes: [N, 2] valid (h, w) of each image; None: the whole tensor is valid.

        Returns:
            ``logits`` [D, N, Q, K] and ``boxes`` [D, N, Q, 4] ((cx, cy, w, h) in [0, 1] of the valid image) per
            decoder layer, the last being the prediction; ``image_sizes`` [N, 2]; two-stage also ``enc_logits``
            [N, S, K] and ``enc_boxes`` [N, S, 4] of the encoder proposals.
        """
        n = images.shape[0]
        if image_sizes is None:
            image_sizes = shape_as_tensor(images)[-2:].to(images.device)[None].expand(n, 2)
        image_sizes = image_sizes.to(images.device)
        mask = padding_mask(image_sizes, images.shape[-2], images.shape[-1])  # [N, H, W]
        feats = self.backbone(images)
        srcs, masks = [], []
        for lvl, proj in enumerate(self.input_proj):
            x = feats[lvl] if lvl < len(feats) else (feats[-1] if lvl == len(feats) else srcs[-1])
            src, level_mask = proj(x, mask)
            srcs.append(src)
            masks.append(level_mask)
        pos = [self.position(m).to(s.dtype) for s, m in zip(srcs, masks, strict=True)]
        num_layers = len(self.transformer.decoder.layers)
        out = self.transformer(
            srcs, masks, pos,
            box_heads=[self.box_heads[i] for i in range(num_layers)] if self.with_box_refine else None,
            proposal_heads=(self._head(self.class_heads, num_layers), self._head(self.box_heads, num_layers))
            if self.two_stage else None)
        logits = torch.stack([self._head(self.class_heads, i)(out.hs[i]) for i in range(num_layers)])
        boxes = torch.stack([refine_boxes(self._head(self.box_heads, i)(out.hs[i]), out.references[i])
                             for i in range(num_layers)])
        result = {"logits": logits, "boxes": boxes, "image_sizes": image_sizes}
        if out.enc_logits is not None and out.enc_boxes is not None:
            result.update(enc_logits=out.enc_logits, enc_boxes=out.enc_boxes)
        return result

    @staticmethod
    def normalized_targets(targets: Sequence[dict[str, Any]], image_sizes: Tensor) -> list[dict[str, Tensor]]:
        """Targets as the criterion takes them: crowd boxes dropped, ``boxes`` (cx, cy, w, h) in [0, 1] of each
        image's valid (h, w) in ``image_sizes`` [N, 2], ``labels`` long."""
        out = []
        for target, (h, w) in zip(targets, image_sizes.tolist(), strict=True):
            boxes = target["boxes"].to(image_sizes.device, torch.float32).reshape(-1, 4)  # [G, 4] xyxy px
            labels = target["labels"].to(image_sizes.device).long()
            crowd = target.get("iscrowd")
            if crowd is not None:
                keep = ~crowd.to(image_sizes.device, torch.bool)
                boxes, labels = boxes[keep], labels[keep]
            scale = boxes.new_tensor([w, h, w, h])
            out.append({"boxes": box_convert(boxes / scale, "xyxy", "cxcywh").clamp(0.0, 1.0), "labels": labels})
        return out

    def loss(self, outputs: dict[str, Tensor], targets: Sequence[dict[str, Any]]) -> dict[str, Tensor]:
        """Set losses of a batch (see :class:`SetCriterion`).

        Args:
            outputs: :meth:`forward`'s result for N images.
            targets: N dicts with ``boxes`` [G, 4] xyxy input pixels, ``labels`` [G] and optionally ``iscrowd``
                [G] (crowd boxes are left out: DETR's matching has no "ignore").

        Returns:
            ``loss`` (weighted total), ``loss_cls``, ``loss_bbox``, ``loss_giou`` of the last layer and, with
            ``aux_loss``, the same per earlier layer (``_d0``, ``_d1``, ...) and for two-stage proposals (``_enc``).
        """
        if len(targets) != outputs["logits"].shape[1]:
            raise ValueError(f"{outputs['logits'].shape[1]} images but {len(targets)} targets")
        normalized = self.normalized_targets(targets, outputs["image_sizes"])
        logits, boxes = outputs["logits"], outputs["boxes"]
        if not self.aux_loss:
            return self.criterion(logits[-1:], boxes[-1:], normalized)
        return self.criterion(logits, boxes, normalized, enc_logits=outputs.get("enc_logits"),
                              enc_boxes=outputs.get("enc_boxes"))

    @torch.no_grad()
    def postprocess(self, outputs: dict[str, Tensor], image_sizes: Tensor) -> list[dict[str, Tensor]]:
        """Top ``max_detections`` (query, class) scores of each image, no NMS.

        Args:
            outputs: :meth:`forward`'s result for N images.
            image_sizes: [N, 2] valid (h, w) of each image.

        Returns:
            N dicts: ``boxes`` [D, 4] xyxy input pixels (clipped to the image), ``scores`` [D] and ``labels`` [D]
            long, best first, D = min(max_detections, Q * K).
        """
        logits, boxes = outputs["logits"][-1], outputs["boxes"][-1]
        k = min(self.max_detections, logits.shape[1] * logits.shape[2])
        xyxy, scores, labels = topk_detections(logits, boxes, image_sizes.to(logits.device), k)
        return [{"boxes": xyxy[i], "scores": scores[i], "labels": labels[i]} for i in range(logits.shape[0])]

    def param_groups(self) -> list[dict[str, Any]]:
        """Trainable parameters grouped by learning-rate factor ``lr_scale``: ``backbone_lr_scale`` for the
        backbone, ``offsets_lr_scale`` for the sampling offsets and the reference-point projection (the
        paper's 0.1 and 0.1), 1 for the rest. :class:`~objmtl.tasks.base.BaseTask` multiplies each group's
        learning rate by its factor."""
        groups: dict[float, list[nn.Parameter]] = {}
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            if name.startswith("backbone."):
                scale = self.backbone_lr_scale
            elif ".sampling_offsets." in name or name.startswith("transformer.reference_points."):
                scale = self.offsets_lr_scale
            else:
                scale = 1.0
            groups.setdefault(scale, []).append(param)
        return [{"params": params, "lr_scale": scale} for scale, params in groups.items()]
