"""Pose samples: one decoded image -> the crops of all its persons, and batches of persons.

One shard sample is one image, and the reader deals whole batches of images to each worker, so a
dataset item is an image with all its person crops (``crops`` [P, 3, H, W]) and :meth:`PoseSamples.collate`
concatenates persons across the images of a batch: a batch holds a variable number of persons,
possibly none. Each person keeps the index of its image in the batch (``person_image``), the map
back to original pixels (``inv_affine``), its box, class and box score; each image keeps its full
ground truth (crowd instances included), which the keypoint metrics need.

Which instances are cropped: in training, neither crowd instances nor those without a labelled
keypoint (nothing to learn), and at most ``max_persons`` per image (sampled); in evaluation every
non-crowd box. In both, an instance whose box has no area or whose keypoints are not K x 3 is
dropped and counted (``dropped``: ``zero_size_box``, ``bad_keypoints``); a bad keypoint array is
also left out of the ground truth, a zero-size box stays in it (a person the model could not see).
An evaluation transform given a detection results json (``TopDownCrop(detections=...)``) crops the
detected boxes instead, each scored by its detection score.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from objmtl.data.sample_adapter import SampleAdapter
from objmtl.data.shard_reader import sample_image_id
from objmtl.errors import UserError
from objmtl.geometry.affine import affine_matrix, apply_affine, box_to_region, invert_affine, to_heatmap
from objmtl.geometry.heatmaps import gaussian_targets

__all__ = ["COCO_UPPER_BODY", "DROP_REASONS", "PoseSamples", "TopDownCrop", "load_detections", "sample_image_id"]

log = logging.getLogger(__name__)

COCO_UPPER_BODY = tuple(range(11))  # nose .. wrists of COCO's 17 keypoints
DROP_REASONS = ("zero_size_box", "bad_keypoints")
PERSON_KEYS = ("crops", "heatmaps", "weights", "inv_affine", "boxes", "labels", "box_scores", "gt_index")
_MAX_WARNINGS = 5


class TopDownCrop:
    """The affine person crop, its augmentation and its heatmap targets (``data.train_transform`` of task=pose).

    Args:
        input_size: (h, w) of a crop.
        num_keypoints: K (meta.json's; None: taken from the first instance seen).
        padding: the crop region is the box grown to the input aspect, times this.
        train: training crops (skip crowd and unlabelled instances, cap ``max_persons``) or evaluation
            crops (every non-crowd box).
        max_persons: training: at most this many persons per image, sampled at random.
        scale_factor: random scale ``clip(1 + f * N(0, 1), 1 - f, 1 + f)`` of the region.
        rotation: random turn ``clip(r * N(0, 1), -2r, 2r)`` degrees, applied with ``rotation_prob``.
        flip_prob: mirror the crop, swapping ``flip_pairs``.
        flip_pairs: left/right keypoint index pairs (meta.json's).
        half_body_prob: with this probability (and at least ``half_body_min_keypoints`` labelled
            keypoints), crop only the upper or the lower body.
        upper_body_ids: the upper-body keypoints; None: COCO's (0..10) when K = 17, else no half-body crops.
        heatmap_stride: input pixels per heatmap cell (the model's: 4 for SimpleBaseline).
        sigma: the Gaussian targets' standard deviation in heatmap cells.
        pixel_transform: albumentations pipeline for the crop's pixels (colour, Normalize, ToTensorV2);
            None: scaled to [0, 1].
        detections: evaluation only: a COCO detection results json (``image_id``, ``category_id``,
            ``bbox`` x, y, w, h in original pixels, ``score``; e.g. ``objmtl-test DET_RUN --out``) whose boxes
            are cropped instead of the ground-truth boxes.
        detection_category_ids: the results' ``category_id`` of each class, in class order (COCO persons:
            ``[1]``); other categories are left out. None: ``category_id`` is the class index.
        detection_score_thr: detections scoring below this are left out.
    """

    def __init__(self, *, input_size: Sequence[int] = (256, 192), num_keypoints: int | None = None,
                 padding: float = 1.25, train: bool = False, max_persons: int = 8, scale_factor: float = 0.0,
                 rotation: float = 0.0, rotation_prob: float = 0.6, flip_prob: float = 0.0,
                 flip_pairs: Sequence[Sequence[int]] = (), half_body_prob: float = 0.0,
                 half_body_min_keypoints: int = 8, upper_body_ids: Sequence[int] | None = None,
                 heatmap_stride: int = 4, sigma: float = 2.0, pixel_transform: Callable[..., dict] | None = None,
                 detections: str | None = None, detection_category_ids: Sequence[int] | None = None,
                 detection_score_thr: float = 0.0) -> None:
        h, w = (int(v) for v in input_size)
        self.input_size, self.num_keypoints, self.padding = (h, w), num_keypoints, float(padding)
        self.train, self.max_persons = train, int(max_persons)
        self.scale_factor, self.rotation, self.rotation_prob = float(scale_factor), float(rotation), rotation_prob
        self.flip_prob, self.flip_pairs = float(flip_prob), [tuple(int(i) for i in p) for p in flip_pairs]
        self.half_body_prob, self.half_body_min_keypoints = float(half_body_prob), int(half_body_min_keypoints)
        self.upper_body_ids = None if upper_body_ids is None else [int(i) for i in upper_body_ids]
        self.heatmap_stride, self.sigma = int(heatmap_stride), float(sigma)
        self.pixel_transform = pixel_transform
        self.detections = detections
        self.detection_category_ids = None if detection_category_ids is None else [int(c) for c in
                                                                                   detection_category_ids]
        self.detection_score_thr = float(detection_score_thr)
        self._detections: dict[int, list[tuple[list[float], float, int]]] | None = None
        self.rng = np.random.default_rng(0)

    def check(self) -> None:
        """A UserError when the crop size does not fit the heatmap grid (:class:`PoseSamples` calls it)."""
        h, w = self.input_size
        if h % self.heatmap_stride or w % self.heatmap_stride:
            raise UserError(f"data.image_size {[h, w]}: both sides must be multiples of the heatmap stride "
                            f"{self.heatmap_stride} (and of 32 for a stride-32 backbone)")
        if self.detections and not self.train and self._detections is None:
            self._detections = load_detections(self.detections, category_ids=self.detection_category_ids,
                                               score_thr=self.detection_score_thr)

    def detections_of(self, image_id: int) -> list[tuple[list[float], float, int]] | None:
        """The person boxes (xyxy), scores and labels detected in ``image_id``; None without ``detections``."""
        if self._detections is None:
            return None
        return self._detections.get(int(image_id), [])

    @property
    def heatmap_size(self) -> tuple[int, int]:
        return self.input_size[0] // self.heatmap_stride, self.input_size[1] // self.heatmap_stride

    def reseed(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        if hasattr(self.pixel_transform, "set_random_seed"):
            self.pixel_transform.set_random_seed(seed)

    def _half_body(self, kps: np.ndarray) -> np.ndarray | None:
        """An xyxy box around the upper or the lower body's labelled keypoints, or None."""
        labelled = kps[:, 2] > 0
        upper = self.upper_body_ids
        if upper is None and len(kps) == 17:
            upper = list(COCO_UPPER_BODY)
        if not upper or labelled.sum() < self.half_body_min_keypoints or self.rng.random() >= self.half_body_prob:
            return None
        is_upper = np.zeros(len(kps), bool)
        is_upper[[i for i in upper if i < len(kps)]] = True
        parts = [labelled & is_upper, labelled & ~is_upper]
        part = parts[0] if self.rng.random() < 0.5 else parts[1]
        if part.sum() < 2:
            part = parts[0] if parts[0].sum() >= 2 else parts[1]
        pts = kps[part, :2]
        x1, y1 = pts.min(0)
        x2, y2 = pts.max(0)
        return None if x2 <= x1 or y2 <= y1 else np.array([x1, y1, x2, y2])

    def _pixels(self, crop: np.ndarray) -> torch.Tensor:
        if self.pixel_transform is not None:
            crop = self.pixel_transform(image=crop)["image"]
        if isinstance(crop, torch.Tensor):
            return crop.float()
        tensor = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1).float()
        return tensor.div_(255) if crop.dtype == np.uint8 else tensor

    def __call__(self, image: np.ndarray, box: np.ndarray, kps: np.ndarray) -> dict[str, Any]:
        """One person: ``crop`` Tensor[3, H, W], ``heatmaps`` (K, h, w), ``weights`` (K,), ``inv_affine`` (2, 3).

        Args:
            image: H x W x 3 uint8, the original image.
            box: (4,) xyxy in original pixels, with positive width and height.
            kps: (K, 3) x, y, v in original pixels.
        """
        h, w = self.input_size
        region = box
        if self.train and self.half_body_prob > 0:
            half = self._half_body(kps)
            region = box if half is None else half
        center, size = box_to_region(region, aspect=w / h, padding=self.padding)
        rotation, flip = 0.0, False
        if self.train:
            f = self.scale_factor
            if f > 0:
                size = size * float(np.clip(1 + f * self.rng.standard_normal(), 1 - f, 1 + f))
            if self.rotation > 0 and self.rng.random() < self.rotation_prob:
                rotation = float(np.clip(self.rotation * self.rng.standard_normal(), -2 * self.rotation,
                                         2 * self.rotation))
            flip = self.flip_prob > 0 and self.rng.random() < self.flip_prob
        m = affine_matrix(center=center, size=size, output_size=(w, h), rotation=rotation, flip=flip)
        crop = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                              borderValue=(0, 0, 0))
        points = apply_affine(kps[:, :2], m)
        visible = kps[:, 2] > 0
        if flip and self.flip_pairs:
            order = list(range(len(kps)))
            for a, b in self.flip_pairs:
                order[a], order[b] = order[b], order[a]
            points, visible = points[order], visible[order]
        heatmaps, weights = gaussian_targets(to_heatmap(points, self.heatmap_stride)[None], visible[None],
                                             size=self.heatmap_size, sigma=self.sigma)
        return {"crop": self._pixels(crop), "heatmaps": torch.from_numpy(heatmaps[0]),
                "weights": torch.from_numpy(weights[0]), "inv_affine": torch.from_numpy(invert_affine(m))}


def load_detections(path: str | Path, *, category_ids: Sequence[int] | None = None,
                    score_thr: float = 0.0) -> dict[int, list[tuple[list[float], float, int]]]:
    """A COCO detection results json -> per image id, ``(xyxy box, score, class label)`` of each detection.

    ``category_ids[label]`` is the ``category_id`` of class ``label`` (others are left out); None:
    ``category_id`` is the label. A missing or malformed file is a UserError naming it.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"data.eval_transform.detections={path}: no such file")
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
        lookup = {int(c): i for i, c in enumerate(category_ids)} if category_ids is not None else None
        out: dict[int, list[tuple[list[float], float, int]]] = {}
        for r in records:
            category, score = int(r["category_id"]), float(r.get("score", 1.0))
            label = lookup.get(category) if lookup is not None else category
            if label is None or score < score_thr:
                continue
            x, y, w, h = (float(v) for v in r["bbox"])
            out.setdefault(int(r["image_id"]), []).append(([x, y, x + w, y + h], score, label))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as e:
        raise UserError(f"{path}: not a COCO detection results list ({type(e).__name__}: {e})") from None
    return out


def _shape(raw: Any) -> str:
    try:
        return str(np.shape(raw))
    except ValueError:
        return "ragged"


def _per_instance(ann: dict[str, Any], name: str, n: int, default: float, dtype: Any) -> np.ndarray:
    """``ann[name]`` as an (n,) array; ``default`` for each instance when it is missing or of another length."""
    values = ann.get(name)
    return np.asarray(values if values is not None and len(values) == n else [default] * n, dtype).reshape(n)


class PoseSamples(SampleAdapter):
    """All person crops of an image with their heatmap targets, and its ground truth for the metrics.

    Args:
        transform: a :class:`TopDownCrop` (``conf/data/pose.yaml``); None: evaluation crops of
            256 x 192 scaled to [0, 1].
    """

    task = "pose"
    needs = ("boxes", "keypoints")

    @staticmethod
    def carried_by(sample: dict[str, Any]) -> bool:
        return sample["ann"].get("keypoints") is not None

    def __init__(self, *, transform: TopDownCrop | None = None) -> None:
        if transform is None:
            transform = TopDownCrop()
        if not isinstance(transform, TopDownCrop):
            raise UserError("data transform: task=pose needs objmtl.data.pose_samples.TopDownCrop as "
                            f"train_transform and eval_transform, not {type(transform).__name__}; use data=pose "
                            "(task=pose's default) with data.root=SHARDS")
        transform.check()
        self.transform = transform
        self.rng = np.random.default_rng(0)
        self._warnings = 0

    def reseed(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.transform.reseed(seed + 1)

    def _warn(self, message: str) -> None:
        self._warnings += 1
        if self._warnings <= _MAX_WARNINGS:
            log.warning("%s%s", message, " (further such warnings are not shown)" if self._warnings == _MAX_WARNINGS
                        else "")

    def _keypoints(self, raw: Any, k: int) -> np.ndarray | None:
        """One instance's keypoints as (K, 3), zeros for an empty list; None when they are not K x 3 numbers."""
        try:
            arr = np.asarray(raw, np.float64) if len(raw) else np.zeros((k, 3))
        except (TypeError, ValueError):  # ragged, not a list, not numbers
            return None
        return arr if arr.shape == (k, 3) and np.isfinite(arr).all() else None

    def _ground_truth(self, sample: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, int]]:
        """The image's instances as arrays (those with K x 3 keypoints) and the drops."""
        ann, key = sample["ann"], sample["key"]
        try:
            boxes = np.asarray(ann.get("boxes") or [], np.float64).reshape(-1, 4)
        except (TypeError, ValueError):
            raise UserError(f"sample {key}: boxes are not lists of x1, y1, x2, y2") from None
        n = len(boxes)
        raw = ann.get("keypoints")
        raw = [[]] * n if raw is None else list(raw)
        if len(raw) != n:
            raise UserError(f"sample {key}: {len(raw)} keypoint arrays for {n} boxes")
        if self.transform.num_keypoints is None:
            self.transform.num_keypoints = next((len(r) for r in raw if isinstance(r, list) and r), 0)
        k = self.transform.num_keypoints
        dropped = dict.fromkeys(DROP_REASONS, 0)
        kps = np.zeros((n, k, 3), np.float64)
        good = np.ones(n, bool)
        for i, r in enumerate(raw):
            arr = self._keypoints(r, k)
            if arr is None:
                good[i] = False
                dropped["bad_keypoints"] += 1
                self._warn(f"sample {key}: instance {i} has keypoints of shape {_shape(r)}, not ({k}, 3) as "
                           "meta.json's keypoint names say; dropped")
                continue
            kps[i] = arr
        area = _per_instance(ann, "area", n, 0.0, np.float64)
        wh = (boxes[:, 2:] - boxes[:, :2]).clip(0)
        area = np.where(area > 0, area, wh[:, 0] * wh[:, 1])
        gt = {"boxes": boxes[good], "labels": _per_instance(ann, "classes", n, 0, np.int64)[good],
              "keypoints": kps[good], "iscrowd": _per_instance(ann, "iscrowd", n, 0, np.int64)[good].astype(bool),
              "area": area[good]}
        return gt, dropped

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        """One decoded sample -> its persons.

        Returns:
            ``crops`` Tensor[P, 3, H, W], ``heatmaps`` [P, K, h, w], ``weights`` [P, K], ``inv_affine``
            [P, 2, 3] float64 (crop -> original pixels), ``boxes`` [P, 4] (original xyxy), ``labels``
            [P], ``box_scores`` [P] (1 for ground-truth boxes), ``gt_index`` [P] (the person's row in
            ``image["gt"]``; -1 for a detected box), ``image`` (``image_id``, ``key``, ``orig_size`` (h, w), ``gt``: boxes,
            labels, keypoints [M, K, 3], iscrowd, area as tensors) and ``dropped`` (reason -> count).
        """
        image = sample["image"]
        gt, dropped = self._ground_truth(sample)
        n, k = gt["keypoints"].shape[:2]
        detected = self.transform.detections_of(sample_image_id(sample))
        if detected is None:  # the ground-truth boxes
            boxes, labels, scores, kps = gt["boxes"], gt["labels"], np.ones(n), gt["keypoints"]
            candidates = ~gt["iscrowd"]
            if self.transform.train:
                candidates &= (gt["keypoints"][:, :, 2] > 0).any(1)
        else:  # detected boxes: no keypoint targets, no ground-truth partner
            boxes = np.asarray([d[0] for d in detected], np.float64).reshape(-1, 4)
            scores = np.asarray([d[1] for d in detected], np.float64)
            labels = np.asarray([d[2] for d in detected], np.int64)
            kps, candidates = np.zeros((len(boxes), k, 3)), np.ones(len(boxes), bool)
        wh = boxes[:, 2:] - boxes[:, :2]
        sized = np.isfinite(wh).all(1) & (wh > 0).all(1)
        dropped["zero_size_box"] = int((candidates & ~sized).sum())
        chosen = np.flatnonzero(candidates & sized)
        if self.transform.train and len(chosen) > self.transform.max_persons:
            chosen = np.sort(self.rng.choice(chosen, self.transform.max_persons, replace=False))
        people = [self.transform(image, boxes[i], kps[i]) for i in chosen]
        (h, w), (hh, hw) = self.transform.input_size, self.transform.heatmap_size
        out: dict[str, Any] = {
            "crops": torch.stack([p["crop"] for p in people]) if people else torch.zeros(0, 3, h, w),
            "heatmaps": torch.stack([p["heatmaps"] for p in people]) if people else torch.zeros(0, k, hh, hw),
            "weights": torch.stack([p["weights"] for p in people]) if people else torch.zeros(0, k),
            "inv_affine": (torch.stack([p["inv_affine"] for p in people]) if people
                           else torch.zeros(0, 2, 3, dtype=torch.float64)),
            "boxes": torch.as_tensor(boxes[chosen], dtype=torch.float32).reshape(-1, 4),
            "labels": torch.as_tensor(labels[chosen], dtype=torch.long),
            "box_scores": torch.as_tensor(scores[chosen], dtype=torch.float32),
            "gt_index": torch.as_tensor(chosen if detected is None else -np.ones(len(chosen)), dtype=torch.long),
        }
        out["image"] = {"image_id": sample_image_id(sample), "key": str(sample.get("key", "")),
                        "orig_size": tuple(int(v) for v in image.shape[:2]),
                        "gt": {"boxes": torch.as_tensor(gt["boxes"], dtype=torch.float32).reshape(n, 4),
                               "labels": torch.as_tensor(gt["labels"], dtype=torch.long),
                               "keypoints": torch.as_tensor(gt["keypoints"], dtype=torch.float32).reshape(n, k, 3),
                               "iscrowd": torch.as_tensor(gt["iscrowd"], dtype=torch.bool),
                               "area": torch.as_tensor(gt["area"], dtype=torch.float32)}}
        out["dropped"] = dropped
        return out

    @staticmethod
    def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
        """Concatenates the persons of a batch of images.

        Returns:
            The :data:`PERSON_KEYS` tensors over all P persons, ``person_image`` LongTensor[P] (index into
            ``images``), ``images`` (one dict per image) and ``dropped`` (summed per reason).
        """
        if not batch:
            raise ValueError("collate: empty batch")
        out: dict[str, Any] = {key: torch.cat([s[key] for s in batch]) for key in PERSON_KEYS}
        out["person_image"] = torch.cat([torch.full((len(s["boxes"]),), i, dtype=torch.long)
                                         for i, s in enumerate(batch)])
        out["images"] = [s["image"] for s in batch]
        out["dropped"] = {r: sum(int(s["dropped"].get(r, 0)) for s in batch) for r in DROP_REASONS}
        return out
