"""One preprocessing for every inference path: checkpoint in PyTorch, ONNX in onnxruntime.

The eval transform a run was trained with (``data.eval_transform``: an albumentations Hydra
config) is the single source: ``objmtl-export`` writes it into the ONNX file's metadata and
:class:`Preprocessor` rebuilds it from either place. Box / keypoint processors and
``ToTensorV2`` are dropped (the predictor only resizes and normalises); with normalisation baked
into the graph, ``Normalize`` is dropped too and the graph receives [0, 255] pixels.

Pose crops each whole image as one person (the crop transform ``TopDownCrop`` of the run).
Detection and segmentation inputs (``pad``) are padded at the bottom and right to a multiple of 32, as training batches
are (:class:`~objmtl.data.det_samples.PadCollate`); with baked normalisation the pad is the mean
colour, which normalises to the zero the training pad has.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from objmtl.errors import UserError
from objmtl.task_kinds import builtin_kind, piece

__all__ = ["PAD_MULTIPLE", "Prepared", "Preprocessor", "clean_transform_config"]

PAD_MULTIPLE = 32
_DROP = {"ToTensorV2", "albumentations.pytorch.ToTensorV2", "albumentations.pytorch.transforms.ToTensorV2"}


def clean_transform_config(cfg: dict[str, Any], *, drop_normalize: bool) -> dict[str, Any]:
    """The eval transform config without target processors, ``ToTensorV2`` (and ``Normalize``)."""
    cfg = copy.deepcopy(cfg)
    for key in ("bbox_params", "keypoint_params", "additional_targets"):
        cfg.pop(key, None)
    kept = []
    for t in cfg.get("transforms", []):
        name = str(t.get("_target_", ""))
        if name in _DROP or (drop_normalize and name.rsplit(".", 1)[-1] == "Normalize"):
            continue
        kept.append(t)
    cfg["transforms"] = kept
    return cfg


@dataclass
class Prepared:
    """A batch ready for a graph and what undoing the resize needs."""

    batch: np.ndarray  # [B, 3, H, W] float32 or uint8
    scales: list[tuple[float, float]]  # per image (sy, sx): input pixels per original pixel
    sizes: list[tuple[int, int]]  # per image original (h, w)
    valid: list[tuple[int, int]]  # per image (h, w) of the resized image inside the padded input
    inv_affines: list[np.ndarray] | None = None  # pose: per crop the 2 x 3 crop -> image map


class Preprocessor:
    """Resize (and normalise) images as the run's eval transform does; batch them.

    Args:
        eval_transform: the run's ``data.eval_transform`` (plain dict with ``_target_`` entries).
        task: the task kind, for messages; and, when ``crops`` or ``pad`` is not given, the built-in kind whose
            export class (``ExportKind.input``, ``.pad``) says them.
        crops: each whole image becomes one person crop (pose's ``TopDownCrop``).
        pad: inputs padded at the bottom and right to a multiple of 32 (detection, segmentation); else every
            image must come out of the eval transform at one size.
        baked: normalisation is in the graph: feed [0, 255] pixels.
        uint8: with ``baked``, feed uint8 (else float32).
        mean: the normalisation mean (0..1), for the pad colour of baked detection inputs.
    """

    def __init__(self, *, eval_transform: dict[str, Any], task: str, baked: bool = False, uint8: bool = False,
                 mean: Sequence[float] = (0.0, 0.0, 0.0), fixed_size: Sequence[int] | None = None,
                 crops: bool | None = None, pad: bool | None = None) -> None:
        from hydra.utils import instantiate

        if crops is None or pad is None:  # built by hand: as the built-in kind's export class says
            kind = piece(builtin_kind(task), "export")
            crops = kind.input == "crops" if crops is None else crops
            pad = kind.pad if pad is None else pad
        self.task, self.baked, self.uint8, self.crops, self.pad = task, baked, uint8, crops, pad
        self.fixed_size = [int(v) for v in fixed_size] if fixed_size else None  # a graph without dynamic H, W
        self.mean = np.asarray(mean, dtype=np.float32)
        if crops:  # a TopDownCrop: crop the whole image as one person, its pixel pipeline cleaned
            self.config = {**eval_transform, "detections": None, "train": False}
            if isinstance(self.config.get("pixel_transform"), dict):
                self.config["pixel_transform"] = clean_transform_config(self.config["pixel_transform"],
                                                                        drop_normalize=baked)
        else:
            self.config = clean_transform_config(eval_transform, drop_normalize=baked)
        self.transform = instantiate(self.config, _convert_="all")

    def one(self, image: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
        """H x W x 3 uint8 RGB -> 3 x h x w array and its (sy, sx) scale."""
        h, w = image.shape[:2]
        out = np.asarray(self.transform(image=image)["image"])
        scale = (out.shape[0] / h, out.shape[1] / w)
        out = out.astype(np.float32) if not (self.baked and self.uint8) else np.clip(out, 0, 255).astype(np.uint8)
        return out.transpose(2, 0, 1), scale

    def _crops(self, images: Sequence[np.ndarray]) -> Prepared:
        """Pose: each whole image as one person box -> crops, and their crop -> image maps."""
        crops, inverse = [], []
        for im in images:
            h, w = im.shape[:2]
            k = int(getattr(self.transform, "num_keypoints", 0) or 1)
            out = self.transform(im, np.array([0.0, 0.0, w, h]), np.zeros((k, 3), np.float32))
            crops.append(out["crop"].numpy())
            inverse.append(out["inv_affine"].numpy())
        batch = np.stack(crops).astype(np.float32)
        return Prepared(batch=batch, scales=[(1.0, 1.0)] * len(images), sizes=[im.shape[:2] for im in images],
                        valid=[tuple(batch.shape[2:])] * len(images), inv_affines=inverse)

    def __call__(self, images: Sequence[np.ndarray]) -> Prepared:
        if self.crops:
            return self._crops(images)
        arrays, scales = zip(*(self.one(im) for im in images), strict=True)
        hs, ws = [a.shape[1] for a in arrays], [a.shape[2] for a in arrays]
        if self.pad:
            height = int(math.ceil(max(hs) / PAD_MULTIPLE) * PAD_MULTIPLE)
            width = int(math.ceil(max(ws) / PAD_MULTIPLE) * PAD_MULTIPLE)
            if self.fixed_size:  # the eval transform keeps images within it: pad up to the graph's size
                if height > self.fixed_size[0] or width > self.fixed_size[1]:
                    raise UserError(f"an image of {max(hs)} x {max(ws)} after the eval transform does not fit the "
                                    f"model's fixed input {self.fixed_size[0]} x {self.fixed_size[1]}")
                height, width = self.fixed_size
        else:
            height, width = max(hs), max(ws)
            if len(set(hs)) > 1 or len(set(ws)) > 1:
                raise UserError(f"images of sizes {sorted(set(zip(hs, ws, strict=True)))} after the eval transform "
                                 f"cannot share a batch for task={self.task}")
        dtype = arrays[0].dtype
        pad = (self.mean * 255.0 if self.baked else np.zeros(3, np.float32)).astype(dtype)
        batch = np.empty((len(arrays), 3, height, width), dtype=dtype)
        batch[:] = pad[None, :, None, None]
        for i, a in enumerate(arrays):
            batch[i, :, : a.shape[1], : a.shape[2]] = a
        return Prepared(batch=batch, scales=list(scales), sizes=[im.shape[:2] for im in images],
                        valid=list(zip(hs, ws, strict=True)))
