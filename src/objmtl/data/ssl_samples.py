"""Self-supervised samples: two augmented views of each image for training, image + label for k-NN.

Training reads only the image; evaluation (the k-NN metric of ``task=ssl``) reads the image and its
``label``, so the shard set must carry classification labels (``cls`` among its tasks).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch.utils.data import default_collate

from objmtl.data.image_tensor import image_tensor
from objmtl.data.sample_adapter import SampleAdapter
from objmtl.data.seeding import ReseedsTransform
from objmtl.errors import UserError

__all__ = ["SSLSamples", "TwoViews"]


class TwoViews:
    """Two albumentations pipelines applied to the same image: ``(image=) -> {"view1", "view2"}``.

    Args:
        view1, view2: pipelines ending in ``ToTensorV2`` (BYOL / MoBY use asymmetric ones: blur
            always on the first view, rarely on the second, solarize only on the second).
    """

    def __init__(self, *, view1: Callable[..., dict], view2: Callable[..., dict]) -> None:
        self.view1, self.view2 = view1, view2

    def set_random_seed(self, seed: int) -> None:
        for i, pipeline in enumerate((self.view1, self.view2)):
            if hasattr(pipeline, "set_random_seed"):
                pipeline.set_random_seed(seed + i)

    def __call__(self, *, image: Any) -> dict[str, Any]:
        return {"view1": self.view1(image=image)["image"], "view2": self.view2(image=image)["image"]}


class SSLSamples(ReseedsTransform, SampleAdapter):
    """With a :class:`TwoViews` transform (training): ``{"view1": Tensor[3, H, W], "view2": Tensor[3, H, W],
    "key": str}``; with a plain pipeline (evaluation): ``{"image": Tensor[3, H, W], "label": int, "key": str}``.

    ``knn_bank``: the data module also serves the training split read with the evaluation transform as
    the first evaluation loader (the k-NN memory bank).
    """

    task = "ssl"
    meta_task = "cls"  # the k-NN metric needs the shards' image labels
    needs = ("label",)
    knn_bank = True

    def __init__(self, *, transform: Callable[..., dict] | None = None) -> None:
        self.transform = transform

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        image, key = sample["image"], str(sample["key"])
        if isinstance(self.transform, TwoViews):
            views = self.transform(image=image)
            return {"view1": image_tensor(views["view1"]), "view2": image_tensor(views["view2"]), "key": key}
        label = sample["ann"].get("label")
        if label is None:
            raise UserError(f"sample {key}: no 'label' in its annotation, which the k-NN metric of task=ssl needs")
        if self.transform is not None:
            image = self.transform(image=image)["image"]
        return {"image": image_tensor(image), "label": int(label), "key": key}

    @staticmethod
    def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
        return default_collate(batch)
