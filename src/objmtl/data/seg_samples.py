"""Semantic segmentation samples: a decoded shard sample -> augmented image and class-id mask, and padded batches.

The mask is a sample's ``mask`` (class ids, 255 = ignore). A sample with instance ``polygons`` but no
mask (YOLO-seg or COCO polygons converted without ``--rle-masks``) gets one rendered here with the
COCO converter's convention: 0 = background, class ``i`` -> ``i + 1``, crowd instances 255 (drawn
first), the others by decreasing polygon area so smaller objects stay on top; such shards need
``mask_classes = ["background", *classes]`` in their meta.json. A sample with neither is kept with
an all-ignore mask (it adds nothing to the loss) and counted as ``unlabeled``.

Image and mask go through one albumentations pipeline (``image=``, ``mask=``; resizes use nearest
neighbour on the mask), so any geometric transform keeps them aligned; pad the mask with 255
(``fill_mask: 255``). The untransformed mask rides along as ``orig_mask``: metrics are computed at
the original size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from objmtl.data.image_tensor import image_tensor
from objmtl.data.sample_adapter import SampleAdapter
from objmtl.data.schema import IGNORE_INDEX
from objmtl.data.seeding import ReseedsTransform
from objmtl.errors import UserError

__all__ = ["SegmentationSamples", "pad_collate", "render_polygons"]

PAD_DIVISOR = 32


def _ring_area(ring: np.ndarray) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def render_polygons(ann: dict[str, Any], *, height: int, width: int) -> np.ndarray | None:
    """A semantic mask from a sample's instance polygons, or None when it has none.

    Args:
        ann: the sample's annotation: ``polygons`` (per instance, flat ``[x0, y0, x1, y1, ...]`` rings
            in pixels), ``classes`` and optional ``iscrowd``.
        height, width: the image size.

    Returns:
        H x W uint8: 0 = background, class ``i`` -> ``i + 1``, crowd instances 255.
    """
    polygons = ann.get("polygons")
    if not polygons or not any(polygons):
        return None
    classes = ann.get("classes") or []
    if len(classes) != len(polygons):
        raise UserError(f"sample {ann.get('image_id', '?')}: {len(polygons)} polygon sets for "
                        f"{len(classes)} classes")
    crowd = ann.get("iscrowd") or [0] * len(polygons)
    items = []
    for rings, cls, is_crowd in zip(polygons, classes, crowd, strict=True):
        rings = [np.asarray(r, np.float64).reshape(-1, 2) for r in rings or [] if len(r) >= 6]
        if not rings:
            continue
        if not is_crowd and int(cls) + 1 >= IGNORE_INDEX:
            raise UserError(f"sample {ann.get('image_id', '?')}: class {cls} has no mask id below {IGNORE_INDEX}")
        value = IGNORE_INDEX if is_crowd else int(cls) + 1
        items.append((not is_crowd, -sum(_ring_area(r) for r in rings), value, rings))
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for *_, value, rings in sorted(items, key=lambda t: (t[0], t[1])):  # crowd first, then largest first
        for ring in rings:
            draw.polygon([tuple(p) for p in ring.tolist()], fill=value)
    return np.asarray(canvas)


class SegmentationSamples(ReseedsTransform, SampleAdapter):
    """An image and its class-id mask, augmented together.

    Args:
        transform: an albumentations Compose taking ``image=`` and ``mask=`` and ending in
            Normalize + ToTensorV2; resizes and crops must leave every sample of a training batch
            one size (``conf/data/seg.yaml`` crops to ``crop_size``). None: the image is only
            scaled to [0, 1].
    """

    task = "seg"
    needs = ("mask",)

    @staticmethod
    def carried_by(sample: dict[str, Any]) -> bool:
        return sample.get("mask") is not None or bool(sample["ann"].get("polygons"))

    def __init__(self, *, transform: Callable[..., dict] | None = None) -> None:
        self.transform = transform

    @staticmethod
    def mask_of(sample: dict[str, Any]) -> tuple[np.ndarray, bool]:
        """``(mask H x W uint8, labeled)``: the stored mask, else rendered polygons, else all ignore."""
        h, w = sample["image"].shape[:2]
        mask = sample.get("mask")
        if mask is None:
            mask = render_polygons(sample["ann"], height=h, width=w)
        if mask is None:
            return np.full((h, w), IGNORE_INDEX, np.uint8), False
        mask = np.asarray(mask)
        if mask.shape != (h, w):
            raise UserError(f"sample {sample['key']}: mask {mask.shape} and image {(h, w)} differ in size")
        if mask.dtype != np.uint8 or not mask.flags.writeable:  # decoded PNGs are read-only; torch wants writable
            mask = mask.astype(np.uint8)
        return mask, True

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        """One decoded sample -> tensors.

        Returns:
            ``image`` Tensor[3, H', W'], ``mask`` LongTensor[H', W'] (class ids, 255 = ignore),
            ``orig_mask`` uint8 Tensor[h, w] (the untransformed mask), ``key``, ``image_id`` (int,
            -1 when unknown), ``orig_size`` (h, w) and ``unlabeled`` (1 when the sample had no mask
            and no polygons).
        """
        image = sample["image"]
        orig_mask, labeled = self.mask_of(sample)
        mask = orig_mask
        if self.transform is not None:
            out = self.transform(image=image, mask=orig_mask)
            image, mask = out["image"], out["mask"]
        tensor = image_tensor(image)
        mask_t = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask).long()
        if mask_t.shape != tensor.shape[-2:]:
            raise UserError(f"data transform: it gave a {tuple(mask_t.shape)} mask for a "
                            f"{tuple(tensor.shape[-2:])} image; use transforms that take masks")
        image_id = sample["ann"].get("image_id")
        key = str(sample.get("key", ""))
        return {"image": tensor, "mask": mask_t, "orig_mask": torch.from_numpy(orig_mask),
                "key": key, "image_id": int(image_id) if image_id is not None else (int(key) if key.isdigit() else -1),
                "orig_size": tuple(orig_mask.shape), "unlabeled": int(not labeled)}

    @staticmethod
    def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
        return pad_collate(batch)


def pad_collate(batch: Sequence[dict[str, Any]], *, pad_divisor: int = PAD_DIVISOR) -> dict[str, Any]:
    """Pads (bottom, right) and stacks :class:`SegmentationSamples` outputs.

    Returns:
        ``images`` Tensor[N, 3, Hp, Wp] (0 outside each image), ``masks`` LongTensor[N, Hp, Wp] (255
        outside), ``image_sizes`` LongTensor[N, 2] (valid h, w), ``orig_masks`` (list of uint8
        Tensor[h_i, w_i]), ``keys``, ``image_ids``, ``orig_sizes`` and ``unlabeled`` (sum).
    """
    if not batch:
        raise ValueError("collate: empty batch")
    sizes = [tuple(int(v) for v in s["image"].shape[-2:]) for s in batch]
    hp = math.ceil(max(h for h, _ in sizes) / pad_divisor) * pad_divisor
    wp = math.ceil(max(w for _, w in sizes) / pad_divisor) * pad_divisor
    first = batch[0]["image"]
    images = first.new_zeros((len(batch), first.shape[0], hp, wp))
    masks = torch.full((len(batch), hp, wp), IGNORE_INDEX, dtype=torch.long)
    for i, (s, (h, w)) in enumerate(zip(batch, sizes, strict=True)):
        images[i, :, :h, :w] = s["image"]
        masks[i, :h, :w] = s["mask"]
    return {"images": images, "masks": masks, "image_sizes": torch.tensor(sizes, dtype=torch.long),
            "orig_masks": [s["orig_mask"] for s in batch], "keys": [s["key"] for s in batch],
            "image_ids": [s["image_id"] for s in batch], "orig_sizes": [s["orig_size"] for s in batch],
            "unlabeled": sum(int(s.get("unlabeled", 0)) for s in batch)}
