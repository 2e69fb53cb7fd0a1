"""Evaluation metrics beyond torchmetrics' defaults."""

from objmtl.metrics.detection import COCO_KEYS, ClassCurve, DetectionMetrics, target_from_ann, voc_ap

__all__ = ["COCO_KEYS", "ClassCurve", "DetectionMetrics", "target_from_ann", "voc_ap"]
