"""Deformable DETR: multi-scale deformable attention transformer, Hungarian matching, set loss."""

from objmtl.models.detection.deformable_detr.criterion import SetCriterion
from objmtl.models.detection.deformable_detr.inference import padding_mask, topk_detections
from objmtl.models.detection.deformable_detr.matcher import HungarianMatcher, focal_class_cost
from objmtl.models.detection.deformable_detr.model import DeformableDETR
from objmtl.models.detection.deformable_detr.position_encoding import SinePositionEmbedding
from objmtl.models.detection.deformable_detr.transformer import DeformableTransformer, TransformerOutput

__all__ = [
    "DeformableDETR",
    "DeformableTransformer",
    "HungarianMatcher",
    "SetCriterion",
    "SinePositionEmbedding",
    "TransformerOutput",
    "focal_class_cost",
    "padding_mask",
    "topk_detections",
]
