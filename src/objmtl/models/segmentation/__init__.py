"""Semantic segmentation models: backbone -> decode head -> per-pixel class logits at the input size."""

from objmtl.models.segmentation.base import SegmentationModel
from objmtl.models.segmentation.fpn_seg import SemanticFPN
from objmtl.models.segmentation.inference import slide_inference
from objmtl.models.segmentation.losses import SegmentationLoss, dice_loss
from objmtl.models.segmentation.torchvision_heads import FCN, DeepLabV3

__all__ = ["FCN", "DeepLabV3", "SegmentationLoss", "SegmentationModel", "SemanticFPN", "dice_loss",
           "slide_inference"]
