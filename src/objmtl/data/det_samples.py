"""Detection samples: a decoded shard sample -> augmented image and boxes, and padded batches.

The albumentations pipeline gets the boxes as ``pascal_voc`` (x1, y1, x2, y2 in pixels) with
three label fields, ``labels``, ``iscrowd`` and ``area``, so that a box dropped by a crop takes
its class, crowd flag and area with it. Its ``bbox_params`` must name those three fields (see
``conf/data/det.yaml``). Boxes of zero width or height never reach the loss: they are
dropped before the pipeline (degenerate in the source, or outside the image) and after it, and
the sample counts them with those the pipeline dropped (``min_area``, ``min_visibility``).
Crowd boxes are kept and flagged: the loss ignores them, the evaluation needs them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch

from objmtl.data.image_tensor import image_tensor
from objmtl.data.sample_adapter import SampleAdapter
from objmtl.data.seeding import ReseedsTransform
from objmtl.data.shard_reader import sample_image_id
from objmtl.errors import UserError

__all__ = ["LABEL_FIELDS", "AspectGroupedDataset", "DetectionSamples", "PadCollate", "group_by_aspect"]

LABEL_FIELDS = ("labels", "iscrowd", "area")
TARGET_KEYS = ("boxes", "labels", "iscrowd", "difficult", "area", "image_id", "orig_size", "scale")


def _hw(image: Any) -> tuple[int, int]:
    """(h, w) of a (C, H, W) tensor or an H x W (x C) array."""
    shape = image.shape[-2:] if isinstance(image, torch.Tensor) else image.shape[:2]
    return int(shape[0]), int(shape[1])


def _check_pipeline(transform: Any, *, task: str = "det") -> None:
    """A UserError when an albumentations Compose can't carry boxes with their label fields (``task``: the kind
    whose adapter asks, and whose data config, ``data=<task>``, is the fix)."""
    processors = getattr(transform, "processors", None)
    if processors is None:  # not an albumentations Compose: trusted to take the same keywords
        return
    proc = processors.get("bboxes")
    if proc is None:
        raise UserError(f"data transform: task={task} needs an albumentations.Compose with bbox_params "
                        f"(format: pascal_voc, label_fields: [{', '.join(LABEL_FIELDS)}]); data=shards is "
                        f"for classification: use data={task} (task={task}'s default) with data.root=SHARDS")
    fields = list(proc.params.label_fields or [])
    missing = [f for f in LABEL_FIELDS if f not in fields]
    if proc.params.format != "pascal_voc" or missing:
        raise UserError(f"data transform: bbox_params has format {proc.params.format} and label_fields "
                        f"{fields}; task={task} needs format pascal_voc and label_fields "
                        f"[{', '.join(LABEL_FIELDS)}]")


class PadCollate:
    """Batches detection samples: images zero-padded (bottom, right) to one multiple-of-divisor size.

    Args:
        pad_divisor: the padded height and width are multiples of this (a backbone's largest stride).
    """

    def __init__(self, *, pad_divisor: int = 32) -> None:
        if pad_divisor < 1:
            raise ValueError(f"pad_divisor={pad_divisor}: must be >= 1")
        self.pad_divisor = pad_divisor

    def __repr__(self) -> str:
        return f"PadCollate(pad_divisor={self.pad_divisor})"

    def __call__(self, batch: list[dict[str, Any]]) -> dict[str, Any]:
        """Pads and stacks the outputs of :class:`DetectionSamples`.

        Args:
            batch: N samples, each with ``image`` Tensor[3, H_i, W_i] and its targets.

        Returns:
            ``images`` Tensor[N, 3, Hp, Wp] (0 outside each image: the mean colour after
            Normalize), ``image_sizes`` LongTensor[N, 2] (valid h, w), ``targets`` (per image:
            boxes, labels, iscrowd, area, image_id, orig_size, scale) and ``dropped_boxes`` (sum).
        """
        if not batch:
            raise ValueError("collate: empty batch")
        sizes = [_hw(s["image"]) for s in batch]
        d = self.pad_divisor
        hp = math.ceil(max(h for h, _ in sizes) / d) * d
        wp = math.ceil(max(w for _, w in sizes) / d) * d
        first = batch[0]["image"]
        images = first.new_zeros((len(batch), first.shape[0], hp, wp))
        for i, (s, (h, w)) in enumerate(zip(batch, sizes, strict=True)):
            images[i, :, :h, :w] = s["image"]
        return {"images": images, "image_sizes": torch.tensor(sizes, dtype=torch.long),
                "targets": [{k: s[k] for k in TARGET_KEYS} for s in batch],
                "dropped_boxes": sum(int(s.get("dropped_boxes", 0)) for s in batch)}


class _Collate:
    """``DetectionSamples.collate``: a :class:`PadCollate` with the class's (or instance's) divisor."""

    def __get__(self, obj: Any, owner: type) -> PadCollate:
        return PadCollate(pad_divisor=(owner if obj is None else obj).pad_divisor)


class DetectionSamples(ReseedsTransform, SampleAdapter):
    """Boxes, classes, crowd flags and areas of a sample, augmented together with its image.

    ``DetectionSamples.collate`` (on the class, as the datamodule uses it) pads to multiples of
    32; ``DetectionSamples(pad_divisor=64).collate`` to multiples of 64. Both are picklable.

    Args:
        transform: an albumentations Compose with ``bbox_params`` (format ``pascal_voc``,
            label_fields ``labels``, ``iscrowd``, ``area``), ending in Normalize + ToTensorV2.
            None: the image is only scaled to [0, 1].
        pad_divisor: see :class:`PadCollate`.
    """

    task = "det"
    needs = ("boxes",)

    @staticmethod
    def carried_by(sample: dict[str, Any]) -> bool:
        return sample["ann"].get("boxes") is not None  # an empty list: an annotated image without objects
    pad_divisor = 32
    collate = _Collate()

    def __init__(self, *, transform: Callable[..., dict] | None = None, pad_divisor: int = 32) -> None:
        _check_pipeline(transform)
        self.transform = transform
        self.pad_divisor = pad_divisor

    @staticmethod
    def _instances(sample: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """(boxes (n, 4) float64, classes (n,) int64, flags (n,) int64: 1 = crowd, 2 = difficult,
        area (n,) float64 or None)."""
        ann = sample["ann"]
        boxes = np.asarray(ann.get("boxes") or [], np.float64).reshape(-1, 4)
        n = len(boxes)
        classes = ann.get("classes")
        if n and (classes is None or len(classes) != n):
            raise UserError(f"sample {sample['key']}: {n} boxes but "
                            f"{'no' if classes is None else len(classes)} classes")
        crowd = np.asarray(ann.get("iscrowd") or [0] * n, bool).reshape(n)
        difficult = np.asarray(ann.get("difficult") or [0] * n, bool).reshape(n)
        area = ann.get("area")
        flags = crowd.astype(np.int64) + 2 * difficult.astype(np.int64)
        return (boxes, np.asarray(classes or [], np.int64).reshape(n), flags,
                np.asarray(area, np.float64).reshape(n) if area is not None and len(area) == n else None)

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        """One decoded sample -> tensors.

        Args:
            sample: ``{"key", "image" (H x W x 3 uint8), "ann"}``; an ``ann`` without ``boxes``
                is an image with no objects.

        Returns:
            ``image`` Tensor[3, H', W'], ``boxes`` Tensor[n, 4] float32 (xyxy, pixels of the output
            image), ``labels`` LongTensor[n], ``iscrowd`` and ``difficult`` BoolTensor[n], ``area`` Tensor[n],
            ``image_id`` int, ``orig_size`` (h, w), ``size`` (H', W'), ``scale`` (H'/h, W'/w) and
            ``dropped_boxes`` (boxes of the source that did not make it).

        ``area`` is recomputed, not copied: each box carries its fill (source area / box area,
        1 when the source has no area) through the pipeline, and ``area = fill * w' * h'``:
        the source area times ``sy * sx`` under resizes, shrunk in proportion when a crop cuts
        the box. ``scale`` is the ratio of sizes: exact for resize and flip pipelines (evaluation),
        nominal after a random crop.
        """
        image = sample["image"]
        h, w = _hw(image)
        # crowd and difficult travel together through the pipeline's "iscrowd" label field as bit flags
        boxes, classes, flags, area = self._instances(sample)
        n_in = len(boxes)
        boxes = np.clip(boxes, 0, [w, h, w, h])  # NaN stays NaN, and is dropped next
        box_area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        ok = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])  # False for NaN
        fill = np.ones(n_in) if area is None else np.maximum(area / np.where(ok, box_area, 1), 0)
        boxes, classes, flags, fill = boxes[ok], classes[ok], flags[ok], fill[ok]
        if self.transform is not None:
            out = self.transform(image=image, bboxes=boxes, labels=classes, iscrowd=flags, area=fill)
            image = out["image"]
            boxes = np.asarray(out["bboxes"], np.float64).reshape(-1, 4)
            classes = np.rint(np.asarray(out["labels"], np.float64)).astype(np.int64).reshape(-1)
            flags = np.rint(np.asarray(out["iscrowd"], np.float64)).astype(np.int64).reshape(-1)
            fill = np.asarray(out["area"], np.float64).reshape(-1)
        tensor = image_tensor(image)
        h2, w2 = _hw(tensor)
        wh = boxes[:, 2:] - boxes[:, :2]
        keep = (wh > 0).all(1)
        return {
            "image": tensor,
            "boxes": torch.as_tensor(boxes[keep], dtype=torch.float32).reshape(-1, 4),
            "labels": torch.as_tensor(classes[keep], dtype=torch.long),
            "iscrowd": torch.as_tensor((flags & 1)[keep] > 0, dtype=torch.bool),
            "difficult": torch.as_tensor((flags & 2)[keep] > 0, dtype=torch.bool),
            "area": torch.as_tensor((fill * wh[:, 0] * wh[:, 1])[keep], dtype=torch.float32),
            "image_id": sample_image_id(sample),
            "orig_size": (h, w),
            "size": (h2, w2),
            "scale": (h2 / h, w2 / w),
            "dropped_boxes": n_in - int(keep.sum()),
        }


def group_by_aspect(stream: Iterable[dict[str, Any]], *, batch_size: int) -> Iterator[dict[str, Any]]:
    """Reorders samples so that each run of ``batch_size`` shares one orientation (optional).

    Padding a batch to its largest height and width wastes most of a portrait image's batch
    when the others are landscape; grouping avoids that. Samples are held per orientation
    (landscape, square included, vs portrait) and a group is emitted once it holds
    ``batch_size``; what is left is flushed at the end (landscape, then portrait), so only the
    last one or two batches of the stream may mix. Nothing is lost or duplicated. Use it on a
    worker's stream before batching, with the loader's batch size (e.g. around
    ``ShardDataset.__iter__``); with several workers each one groups its own samples.

    Args:
        stream: samples with ``size`` (h, w) or an ``image`` (Tensor[3, H, W] or H x W x 3 array).
        batch_size: the batch size of the loader that consumes the stream.

    Yields:
        The same samples, reordered.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: must be >= 1")
    groups: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    for sample in stream:
        h, w = sample["size"] if "size" in sample else _hw(sample["image"])
        group = groups[h > w]
        group.append(sample)
        if len(group) == batch_size:
            yield from group
            group.clear()
    for group in groups.values():
        yield from group


class AspectGroupedDataset(torch.utils.data.IterableDataset):
    """A streaming dataset whose samples pass through :func:`group_by_aspect` in each worker.

    The inner dataset hands each worker whole batches, so regrouping within a worker keeps the
    number of batches and every sample; ``set_epoch``, ``pop_skipped`` and ``len`` are the inner's.
    """

    def __init__(self, *, dataset: Any, batch_size: int) -> None:
        self.dataset, self.batch_size = dataset, batch_size

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return group_by_aspect(iter(self.dataset), batch_size=self.batch_size)

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def pop_skipped(self) -> int:
        return self.dataset.pop_skipped()
