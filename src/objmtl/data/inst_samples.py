"""Instance segmentation samples: boxes and one mask per object, augmented with the image.

Each instance's outline (its polygon rings, or its RLE) is rasterised at the source image's size as COCO does
(:mod:`objmtl.data.instance_masks`), then the albumentations pipeline moves the masks with the image and the
boxes, so a crop, resize or flip treats the mask exactly as the pixels. Why masks, not polygon vertices: a crop
through a polygon would need clipping, and a vertex dropped by the crop would break its ring; a mask is
cut as the image is. The boxes carry their instance's index as a fifth column, so the masks of the boxes the
pipeline keeps are picked by that index.

Counted, never raised (``dropped_boxes``; task=inst logs the epoch's sums as ``data/dropped_instances`` and, of
those, ``data/instances_without_mask``): an instance whose outline can't be a mask (see
:func:`~objmtl.data.instance_masks.instance_rles`: a ring of fewer than 3 points, an RLE of another size, zero
area, no outline at all), a box the pipeline drops (crop, ``min_area``, ``min_visibility``), and an instance
whose mask is empty after the pipeline (it left the crop). Crowd instances are kept with their masks and
flagged: the loss leaves them out, the evaluation scores them as COCO does.

Evaluation needs the masks at the original size (COCO's areas and IoUs are in source pixels), so each sample
also carries the compressed source RLEs of the instances it kept (``rles``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from objmtl.data.det_samples import DetectionSamples, PadCollate, _check_pipeline, _hw
from objmtl.data.image_tensor import image_tensor
from objmtl.data.instance_masks import decode_rles, instance_rles
from objmtl.data.shard_reader import sample_image_id

__all__ = ["InstanceCollate", "InstanceSamples"]


class InstanceCollate(PadCollate):
    """:class:`~objmtl.data.det_samples.PadCollate` whose targets also hold each image's ``masks`` (uint8
    [n, H_i, W_i], input pixels, unpadded) and ``rles`` (source-size RLEs); ``dropped_masks`` sums the samples'."""

    def __call__(self, batch: list[dict[str, Any]]) -> dict[str, Any]:
        out = super().__call__(batch)
        for target, sample in zip(out["targets"], batch, strict=True):
            target["masks"], target["rles"] = sample["masks"], sample["rles"]
        out["dropped_masks"] = sum(int(s.get("dropped_masks", 0)) for s in batch)
        return out


class _Collate:
    def __get__(self, obj: Any, owner: type) -> InstanceCollate:
        return InstanceCollate(pad_divisor=(owner if obj is None else obj).pad_divisor)


class InstanceSamples(DetectionSamples):
    """Boxes, classes, crowd flags, areas and masks of a sample's instances, augmented with its image.

    Args:
        transform: as :class:`~objmtl.data.det_samples.DetectionSamples`' (``bbox_params`` format ``pascal_voc``,
            label fields ``labels``, ``iscrowd``, ``area``); albumentations moves ``masks`` with the image.
        pad_divisor: see :class:`~objmtl.data.det_samples.PadCollate`.
    """

    task = "inst"
    needs = ("boxes",)
    collate = _Collate()

    def __init__(self, *, transform: Callable[..., dict] | None = None, pad_divisor: int = 32) -> None:
        _check_pipeline(transform, task="inst")
        self.transform = transform
        self.pad_divisor = pad_divisor

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        """One decoded sample -> tensors.

        Returns:
            What :meth:`DetectionSamples.__call__` returns, plus ``masks`` (uint8 Tensor[n, H', W'], 1 inside,
            in the output image's pixels) and ``rles`` (the kept instances' RLEs at the source size); its
            ``dropped_boxes`` also counts the instances left without a mask (``dropped_masks``: those alone).
        """
        image = sample["image"]
        h, w = _hw(image)
        boxes, classes, flags, area = self._instances(sample)
        n_in = len(boxes)
        rles, _ = instance_rles(sample["ann"], height=h, width=w)
        boxes = np.clip(boxes, 0, [w, h, w, h])
        box_area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        ok = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]) & np.array([r is not None for r in rles], bool)
        fill = np.ones(n_in) if area is None else np.maximum(area / np.where(ok, box_area, 1), 0)
        index = np.flatnonzero(ok)
        masks = decode_rles([rles[i] for i in index], height=h, width=w)
        boxes = np.concatenate([boxes[index], index[:, None].astype(np.float64)], axis=1)
        classes, flags, fill = classes[index], flags[index], fill[index]
        if self.transform is not None:
            extra = {"masks": masks} if len(index) else {}
            out = self.transform(image=image, bboxes=boxes, labels=classes, iscrowd=flags, area=fill, **extra)
            image = out["image"]
            boxes = np.asarray(out["bboxes"], np.float64).reshape(-1, 5)
            classes = np.rint(np.asarray(out["labels"], np.float64)).astype(np.int64).reshape(-1)
            flags = np.rint(np.asarray(out["iscrowd"], np.float64)).astype(np.int64).reshape(-1)
            fill = np.asarray(out["area"], np.float64).reshape(-1)
            masks = out.get("masks", masks)
        tensor = image_tensor(image)
        h2, w2 = _hw(tensor)
        masks = torch.as_tensor(np.asarray(masks), dtype=torch.uint8).reshape(-1, h2, w2) if len(index) else (
            torch.zeros((0, h2, w2), dtype=torch.uint8))
        kept = np.rint(boxes[:, 4]).astype(np.int64)  # each box's instance: its row in masks before the pipeline
        row = {int(i): r for r, i in enumerate(index)}
        masks = masks[[row[int(i)] for i in kept]] if len(kept) else masks[:0]
        wh = boxes[:, 2:4] - boxes[:, :2]
        keep = (wh > 0).all(1) & (masks.flatten(1).bool().any(1).numpy() if len(kept) else np.zeros(0, bool))
        keep_t = torch.as_tensor(keep, dtype=torch.bool)
        return {
            "image": tensor,
            "boxes": torch.as_tensor(boxes[keep, :4], dtype=torch.float32).reshape(-1, 4),
            "labels": torch.as_tensor(classes[keep], dtype=torch.long),
            "iscrowd": torch.as_tensor((flags & 1)[keep] > 0, dtype=torch.bool),
            "difficult": torch.as_tensor((flags & 2)[keep] > 0, dtype=torch.bool),
            "area": torch.as_tensor((fill * wh[:, 0] * wh[:, 1])[keep], dtype=torch.float32),
            "masks": masks[keep_t],
            "rles": [rles[int(i)] for i in kept[keep]],
            "image_id": sample_image_id(sample),
            "orig_size": (h, w),
            "size": (h2, w2),
            "scale": (h2 / h, w2 / w),
            "dropped_boxes": n_in - int(keep.sum()),
            "dropped_masks": n_in - len(index),
        }
