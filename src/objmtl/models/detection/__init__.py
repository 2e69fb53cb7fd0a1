"""Dense-detector building blocks: anchor grids, the DeltaXYWH box coder, the ATSS, FCOS and max-IoU
assigners, FPN, the shared dense head and the ATSS, FCOS and RetinaNet detectors; and Deformable DETR."""

from objmtl.models.detection.atss import ATSS
from objmtl.models.detection.atss_assigner import IGNORED, NEGATIVE, AssignResult, atss_assign
from objmtl.models.detection.atss_head import ATSSHead, Scale
from objmtl.models.detection.box_coder import DeltaXYWHCoder, anchor_points_and_boxes
from objmtl.models.detection.centerness import centerness_target
from objmtl.models.detection.deformable_detr import DeformableDETR
from objmtl.models.detection.dense_head import ConvTower, DenseHead
from objmtl.models.detection.detector import DenseDetector
from objmtl.models.detection.fcos import FCOS, fcos_assign
from objmtl.models.detection.fpn import FPN
from objmtl.models.detection.retinanet import RetinaNet, max_iou_assign, retinanet_anchors

__all__ = [
    "ATSS",
    "FCOS",
    "FPN",
    "IGNORED",
    "NEGATIVE",
    "ATSSHead",
    "AssignResult",
    "ConvTower",
    "DeformableDETR",
    "DeltaXYWHCoder",
    "DenseDetector",
    "DenseHead",
    "RetinaNet",
    "Scale",
    "anchor_points_and_boxes",
    "atss_assign",
    "centerness_target",
    "fcos_assign",
    "max_iou_assign",
    "retinanet_anchors",
]
