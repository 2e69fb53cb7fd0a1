from objmtl.tasks.base import BaseTask
from objmtl.tasks.classification import ClassificationTask
from objmtl.tasks.detection import DetectionTask
from objmtl.tasks.multitask import MultiTaskTask
from objmtl.tasks.pose import PoseTask
from objmtl.tasks.segmentation import SegmentationTask
from objmtl.tasks.ssl import SSLTask

__all__ = ["BaseTask", "ClassificationTask", "DetectionTask", "MultiTaskTask", "PoseTask", "SegmentationTask", "SSLTask"]
