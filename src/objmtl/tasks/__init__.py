from objmtl.tasks.base import BaseTask
from objmtl.tasks.classification import ClassificationTask
from objmtl.tasks.detection import DetectionTask

__all__ = ["BaseTask", "ClassificationTask", "DetectionTask"]
