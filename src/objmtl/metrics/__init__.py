"""Evaluation metrics beyond torchmetrics' defaults."""

from objmtl.metrics.detection import COCO_KEYS, ClassCurve, DetectionMetrics, target_from_ann, voc_ap
from objmtl.metrics.keypoints import KEYPOINT_KEYS, KeypointMetrics
from objmtl.metrics.knn import knn_predict
from objmtl.metrics.segmentation import SEG_KEYS, SegmentationMetrics

__all__ = ["COCO_KEYS", "ClassCurve", "DetectionMetrics", "KEYPOINT_KEYS", "KeypointMetrics", "SEG_KEYS", "SegmentationMetrics", "knn_predict", "target_from_ann", "voc_ap"]
