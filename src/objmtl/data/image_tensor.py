"""The one conversion every sample adapter ends with: an augmented image -> a (3, H, W) float tensor."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["image_tensor"]


def image_tensor(image: Any) -> torch.Tensor:
    """(3, H, W) float: a tensor as is (ToTensorV2 output), an H x W x 3 array (uint8 scaled to [0, 1])."""
    if isinstance(image, torch.Tensor):
        return image.float()
    array = np.asarray(image)
    tensor = torch.from_numpy(np.array(array, copy=True)).permute(2, 0, 1).float()
    return tensor.div_(255) if array.dtype == np.uint8 else tensor
