"""Per-task adapters: a decoded shard sample -> augmented tensors, and batches of them.

A decoded sample (see :func:`objmtl.data.shard_reader.decode_sample`) carries every annotation
kind the shards hold; each task keeps what it trains on and hands the image (and its targets)
to one albumentations pipeline.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch.utils.data import default_collate

from objmtl.data.det_samples import DetectionSamples
from objmtl.data.image_tensor import image_tensor
from objmtl.data.mtl_samples import MultiTaskSamples
from objmtl.data.pose_samples import PoseSamples
from objmtl.data.seeding import ReseedsTransform
from objmtl.data.seg_samples import SegmentationSamples
from objmtl.data.ssl_samples import SSLSamples
from objmtl.errors import UserError

__all__ = ["ClassificationSamples", "DetectionSamples", "MultiTaskSamples", "SSLSamples", "TASK_SAMPLES", "samples_for_task"]


class ClassificationSamples(ReseedsTransform):
    """``{"image": Tensor[3, H, W], "label": int, "key": str}`` from a sample's ``label``."""

    task = "cls"
    needs = ("label",)

    def __init__(self, *, transform: Callable[..., dict] | None = None) -> None:
        self.transform = transform

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        label = sample["ann"].get("label")
        if label is None:
            raise UserError(f"sample {sample['key']}: no 'label' in its annotation, which task=cls needs")
        image = sample["image"]
        if self.transform is not None:
            image = self.transform(image=image)["image"]
        return {"image": image_tensor(image), "label": int(label), "key": str(sample["key"])}

    @staticmethod
    def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
        return default_collate(batch)


TASK_SAMPLES: dict[str, type] = {"cls": ClassificationSamples, "det": DetectionSamples, "seg": SegmentationSamples,
                                 "pose": PoseSamples, "ssl": SSLSamples, "mtl": MultiTaskSamples}


def samples_for_task(task: str) -> type:
    if task not in TASK_SAMPLES:
        raise UserError(f"data: no sample adapter for task {task!r} (known: {', '.join(TASK_SAMPLES)})")
    return TASK_SAMPLES[task]
