"""Image regression samples: a decoded shard sample's image and its ``targets`` (one float per target name)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import default_collate

from objmtl.data.image_tensor import image_tensor
from objmtl.data.sample_adapter import SampleAdapter
from objmtl.data.seeding import ReseedsTransform
from objmtl.errors import UserError

__all__ = ["RegressionSamples"]


class RegressionSamples(ReseedsTransform, SampleAdapter):
    """``{"image": Tensor[3, H, W], "target": Tensor[T] (source units), "key": str}`` from a sample's
    ``targets`` list, in the order of ``meta.json``'s ``targets`` names. The task normalises them."""

    task = "reg"
    needs = ("targets",)

    @staticmethod
    def carried_by(sample: dict[str, Any]) -> bool:
        return sample["ann"].get("targets") is not None

    def __init__(self, *, transform: Callable[..., dict] | None = None) -> None:
        self.transform = transform

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        values = sample["ann"].get("targets")
        if values is None:
            raise UserError(f"sample {sample['key']}: no 'targets' in its annotation, which task=reg needs")
        try:
            target = [float(v) for v in values]
        except (TypeError, ValueError):
            raise UserError(f"sample {sample['key']}: targets {values!r} are not numbers") from None
        if not all(math.isfinite(v) for v in target):
            raise UserError(f"sample {sample['key']}: targets {values!r} are not all finite")
        image = sample["image"]
        if self.transform is not None:
            image = self.transform(image=image)["image"]
        return {"image": image_tensor(image), "target": torch.tensor(target, dtype=torch.float32),
                "key": str(sample["key"])}

    @staticmethod
    def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
        return default_collate(batch)
