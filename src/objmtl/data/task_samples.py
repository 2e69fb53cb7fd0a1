"""Per-task adapters: a decoded shard sample -> augmented tensors, and batches of them.

A decoded sample (see :func:`objmtl.data.shard_reader.decode_sample`) carries every annotation
kind the shards hold; each task keeps what it trains on and hands the image (and its targets)
to one albumentations pipeline.
"""

from __future__ import annotations

from objmtl.data.cls_samples import ClassificationSamples
from objmtl.data.det_samples import DetectionSamples
from objmtl.data.mtl_samples import MultiTaskSamples
from objmtl.data.pose_samples import PoseSamples
from objmtl.data.seg_samples import SegmentationSamples
from objmtl.data.ssl_samples import SSLSamples
from objmtl.errors import UserError

__all__ = ["ClassificationSamples", "DetectionSamples", "MultiTaskSamples", "SSLSamples", "TASK_SAMPLES", "samples_for_task"]


TASK_SAMPLES: dict[str, type] = {"cls": ClassificationSamples, "det": DetectionSamples, "seg": SegmentationSamples,
                                 "pose": PoseSamples, "ssl": SSLSamples, "mtl": MultiTaskSamples}


def samples_for_task(task: str) -> type:
    if task not in TASK_SAMPLES:
        raise UserError(f"data: no sample adapter for task {task!r} (known: {', '.join(TASK_SAMPLES)})")
    return TASK_SAMPLES[task]
