"""Dense-detector building blocks: anchor grids, the DeltaXYWH box coder and the ATSS assigner."""

from objmtl.models.detection.atss_assigner import IGNORED, NEGATIVE, AssignResult, atss_assign
from objmtl.models.detection.box_coder import DeltaXYWHCoder, anchor_points_and_boxes

__all__ = ["IGNORED", "NEGATIVE", "AssignResult", "DeltaXYWHCoder", "anchor_points_and_boxes", "atss_assign"]
