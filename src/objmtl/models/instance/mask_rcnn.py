"""Mask R-CNN (He et al., ICCV 2017) from torchvision's parts on any factory backbone.

The backbone's C2-C5 (:func:`~objmtl.models.build_backbone`, ``out_indices: [0, 1, 2, 3]``) feed torchvision's
``FeaturePyramidNetwork`` with ``LastLevelMaxPool`` (P2-P6, as ``maskrcnn_resnet50_fpn``), its
``RegionProposalNetwork`` (``AnchorGenerator`` + ``RPNHead``) and its ``RoIHeads`` (``MultiScaleRoIAlign`` 7x7 ->
``TwoMLPHead`` -> ``FastRCNNPredictor``; ``MultiScaleRoIAlign`` 14x14 -> ``MaskRCNNHeads`` ->
``MaskRCNNPredictor``). Nothing of those is written again here: this class wires them and leaves out
``GeneralizedRCNNTransform``, because objmtl's data pipeline already normalises, resizes and pads (the
batch's valid sizes come as ``image_sizes``), so the model sees exactly what the data module made.

Class ids: the data's ``0..num_classes-1``; torchvision's heads reserve 0 for the background, so targets get
``+1`` on the way in and detections ``-1`` on the way out.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.roi_heads import RoIHeads, paste_masks_in_image
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from objmtl.models.interfaces import TaskModel

__all__ = ["InstanceSegmenter", "MaskRCNN", "paste_masks"]


@runtime_checkable
class InstanceSegmenter(TaskModel, Protocol):
    """``forward(images, image_sizes, targets)`` in training: the loss terms; ``forward(images, image_sizes)`` in
    eval: per image ``boxes`` (input pixels), ``scores``, ``labels`` (0-based) and ``masks`` [n, 1, M, M]
    (probabilities in each box, :func:`paste_masks` puts them in the image); ``mask_thresh`` binarises them."""

    num_classes: int
    mask_thresh: float


def paste_masks(masks: Tensor, boxes: Tensor, size: tuple[int, int], *, thresh: float) -> Tensor:
    """Per-box mask probabilities [n, 1, M, M] -> bool masks [n, h, w] of an image of ``size`` (h, w), each pasted
    into its box (``boxes`` [n, 4] xyxy in that image's pixels) as torchvision's Mask R-CNN does, then > thresh."""
    h, w = size
    if masks.shape[0] == 0:
        return torch.zeros((0, h, w), dtype=torch.bool, device=masks.device)
    return paste_masks_in_image(masks, boxes, (h, w), padding=1)[:, 0] > thresh


class MaskRCNN(nn.Module):
    """Mask R-CNN: backbone + FPN + RPN + box and mask RoI heads, all torchvision's but the backbone.

    Args:
        backbone: returns C2..C5 (a list of maps) and declares ``out_channels``.
        num_classes: object classes, without the background (``${meta:num_classes}``).
        fpn_channels: channels of P2-P6 and of the RoI features.
        anchor_sizes: one tuple of anchor sides (input pixels) per level P2-P6.
        aspect_ratios: anchor height / width ratios, the same at every level.
        rpn_*: torchvision's ``RegionProposalNetwork`` settings (``pre_nms_top_n`` / ``post_nms_top_n`` as
            ``{training, testing}``; ``fg_iou``, ``bg_iou``, ``batch_size_per_image``, ``positive_fraction``,
            ``nms_thresh``, ``score_thresh``).
        box_*: torchvision's ``RoIHeads`` box settings (sampling, ``score_thresh``, ``nms_thresh``,
            ``detections_per_img``); ``representation_size``: the width of ``TwoMLPHead``.
        mask_layers: channels of each conv of ``MaskRCNNHeads``; ``mask_dim_reduced``: of the predictor's deconv.
        mask_thresh: a pasted mask's probability above which a pixel is inside.
    """

    kind = "inst"

    def __init__(self, *, backbone: nn.Module, num_classes: int, fpn_channels: int = 256,
                 anchor_sizes: Sequence[Sequence[int]] = ((32,), (64,), (128,), (256,), (512,)),
                 aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
                 rpn_pre_nms_top_n: dict[str, int] | None = None, rpn_post_nms_top_n: dict[str, int] | None = None,
                 rpn_nms_thresh: float = 0.7, rpn_fg_iou: float = 0.7, rpn_bg_iou: float = 0.3,
                 rpn_batch_size_per_image: int = 256, rpn_positive_fraction: float = 0.5,
                 rpn_score_thresh: float = 0.0, box_fg_iou: float = 0.5, box_bg_iou: float = 0.5,
                 box_batch_size_per_image: int = 512, box_positive_fraction: float = 0.25,
                 representation_size: int = 1024, box_score_thresh: float = 0.05, box_nms_thresh: float = 0.5,
                 box_detections_per_img: int = 100, mask_layers: Sequence[int] = (256, 256, 256, 256),
                 mask_dim_reduced: int = 256, mask_thresh: float = 0.5) -> None:
        super().__init__()
        in_channels = [int(c) for c in backbone.out_channels]
        if len(in_channels) != 4:
            raise ValueError(f"Mask R-CNN takes the backbone's C2-C5 (out_indices: [0, 1, 2, 3]); it returns "
                             f"{len(in_channels)} maps")
        if len(anchor_sizes) != 5:
            raise ValueError(f"anchor_sizes: one tuple per level P2-P6 (5), got {len(anchor_sizes)}")
        self.backbone = backbone
        self.num_classes = int(num_classes)
        self.mask_thresh = float(mask_thresh)
        self.fpn = FeaturePyramidNetwork(in_channels, fpn_channels, extra_blocks=LastLevelMaxPool())
        anchors = AnchorGenerator(tuple(tuple(int(s) for s in level) for level in anchor_sizes),
                                  (tuple(float(r) for r in aspect_ratios),) * len(anchor_sizes))
        pre = dict(rpn_pre_nms_top_n or {"training": 2000, "testing": 1000})
        post = dict(rpn_post_nms_top_n or {"training": 2000, "testing": 1000})
        self.rpn = RegionProposalNetwork(
            anchors, RPNHead(fpn_channels, anchors.num_anchors_per_location()[0]),
            rpn_fg_iou, rpn_bg_iou, rpn_batch_size_per_image, rpn_positive_fraction, pre, post, rpn_nms_thresh,
            score_thresh=rpn_score_thresh)
        levels = ["0", "1", "2", "3"]
        self.roi_heads = RoIHeads(
            MultiScaleRoIAlign(levels, 7, 2), TwoMLPHead(fpn_channels * 7 * 7, representation_size),
            FastRCNNPredictor(representation_size, self.num_classes + 1),
            box_fg_iou, box_bg_iou, box_batch_size_per_image, box_positive_fraction, None,
            box_score_thresh, box_nms_thresh, box_detections_per_img,
            mask_roi_pool=MultiScaleRoIAlign(levels, 14, 2),
            mask_head=MaskRCNNHeads(fpn_channels, list(mask_layers), 1),
            mask_predictor=MaskRCNNPredictor(int(mask_layers[-1]), mask_dim_reduced, self.num_classes + 1))

    def features(self, images: Tensor) -> OrderedDict[str, Tensor]:
        """P2-P6 of a batch, named ``0``..``3`` and ``pool`` as torchvision's heads expect."""
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(self.backbone(images))))

    def forward(self, images: Tensor, image_sizes: Tensor,
                targets: Sequence[dict[str, Tensor]] | None = None) -> Any:
        """Training: the loss terms (``loss_objectness``, ``loss_rpn_box_reg``, ``loss_classifier``,
        ``loss_box_reg``, ``loss_mask``) against ``targets`` (per image ``boxes`` [G, 4] xyxy input pixels,
        ``labels`` [G] 0-based, ``masks`` [G, H_i, W_i] uint8; crowd instances left out by the caller).
        Eval: the detections of each image (see :class:`InstanceSegmenter`).

        Args:
            images: Tensor[N, 3, Hp, Wp], padded.
            image_sizes: LongTensor[N, 2], each image's valid (h, w).
            targets: training only.
        """
        sizes = [(int(h), int(w)) for h, w in image_sizes.tolist()]
        image_list = ImageList(images, sizes)
        feats = self.features(images)
        theirs = None
        if self.training:
            if targets is None:
                raise ValueError("MaskRCNN in training mode needs targets")
            theirs = [{"boxes": t["boxes"].float(), "labels": t["labels"].long() + 1, "masks": t["masks"]}
                      for t in targets]
        proposals, rpn_losses = self.rpn(image_list, feats, theirs)
        detections, roi_losses = self.roi_heads(feats, proposals, sizes, theirs)
        if self.training:
            return {**rpn_losses, **roi_losses}
        return [{**d, "labels": d["labels"] - 1} for d in detections]
