"""Classification samples: a decoded shard sample's image and its ``label``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch.utils.data import default_collate

from objmtl.data.image_tensor import image_tensor
from objmtl.data.sample_adapter import SampleAdapter
from objmtl.data.seeding import ReseedsTransform
from objmtl.errors import UserError

__all__ = ["ClassificationSamples"]


class ClassificationSamples(ReseedsTransform, SampleAdapter):
    """``{"image": Tensor[3, H, W], "label": int, "key": str}`` from a sample's ``label``."""

    task = "cls"
    needs = ("label",)

    @staticmethod
    def carried_by(sample: dict[str, Any]) -> bool:
        return sample["ann"].get("label") is not None

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
