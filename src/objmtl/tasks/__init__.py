from objmtl.tasks.base import BaseTask
from objmtl.tasks.classification import ClassificationTask

__all__ = ["BaseTask", "ClassificationTask"]
