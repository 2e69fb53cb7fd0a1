"""Dense-detector building blocks: anchor grids, the DeltaXYWH box coder, the ATSS assigner, FPN, the ATSS
head and the detector."""

from objmtl.models.detection.atss_assigner import IGNORED, NEGATIVE, AssignResult, atss_assign
from objmtl.models.detection.atss_head import ATSSHead, Scale
from objmtl.models.detection.box_coder import DeltaXYWHCoder, anchor_points_and_boxes
from objmtl.models.detection.detector import ATSS, DenseDetector, centerness_target
from objmtl.models.detection.fpn import FPN

__all__ = [
    "ATSS",
    "FPN",
    "IGNORED",
    "NEGATIVE",
    "ATSSHead",
    "AssignResult",
    "DeltaXYWHCoder",
    "DenseDetector",
    "Scale",
    "anchor_points_and_boxes",
    "atss_assign",
    "centerness_target",
]
