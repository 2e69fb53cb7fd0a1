"""Top-down pose estimation: heatmap regression on person crops; OKS AP and PCK in original pixels."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from objmtl.data.pose_samples import DROP_REASONS
from objmtl.errors import UserError
from objmtl.geometry.heatmaps import decode_heatmaps, flip_heatmaps
from objmtl.metrics.keypoints import KEYPOINT_KEYS, KeypointMetrics, oks_sigmas
from objmtl.tasks.base import BaseTask, OptimizerFactory, SchedulerFactory

__all__ = ["PoseTask", "keypoints_to_original"]

_LOGGED = (*KEYPOINT_KEYS, "pck")
_SHOWN = ("ap", "pck")  # on the progress bar


def keypoints_to_original(coords: Tensor, inv_affine: Tensor, *, stride: float) -> Tensor:
    """Heatmap cells (P, K, 2) -> original-image pixels through each crop's inverse affine (P, 2, 3)."""
    xy = (coords.double() + 0.5) * stride - 0.5  # input-crop pixels (objmtl.geometry.affine.from_heatmap)
    a = inv_affine.to(xy)
    return torch.einsum("pij,pkj->pki", a[:, :, :2], xy) + a[:, None, :, 2]


class PoseTask(BaseTask):
    """Trains a heatmap model (:class:`~objmtl.models.pose.SimpleBaseline`) on batches of
    :class:`~objmtl.data.pose_samples.PoseSamples`.

    Logs ``train/loss``; ``val/loss`` and the keypoint metrics ``val/ap`` (COCO keypoint AP by OKS,
    the main metric), ``val/ap50``, ``val/ap75``, ``val/ap_medium``, ``val/ap_large``, ``val/ar`` (and
    ``ar50``, ``ar75``, ``ar_medium``, ``ar_large``) and ``val/pck`` (PCK@0.2 of the box's longest side),
    and the same under ``test/``; ``STAGE/dropped_persons`` counts persons not cropped (zero-size boxes,
    bad keypoint arrays), also kept per stage in ``dropped``. Evaluation predicts on every
    non-crowd ground-truth box, averages with the mirrored crop's heatmaps (``flip_test``), decodes
    to sub-pixel cells and maps them to original pixels with each crop's inverse affine.
    ``validation_step`` / ``test_step`` return ``{"preds", "targets"}`` per image, for callbacks
    (``objmtl.runs.pose_outputs``).

    Args:
        model: ``forward(crops) -> heatmaps``, ``loss``, ``stride``, ``num_keypoints``.
        class_names: the instance classes (COCO: person).
        keypoint_names: meta.json's (COCO's 17 get COCO's OKS sigmas).
        skeleton: keypoint index pairs to draw.
        flip_pairs: left/right keypoint pairs (the flip test swaps them).
        sigmas: meta.json's OKS sigmas (see :func:`~objmtl.metrics.keypoints.oks_sigmas`).
        flip_test: average with the flipped crop's prediction in evaluation.
        decode: ``dark`` (Taylor step), ``quarter`` or ``argmax``.
        keypoint_threshold: a person's score is its box score times the mean confidence of its keypoints
            above this (SimpleBaseline's rescoring; of all its keypoints when none is).
        optimizer: See :class:`~objmtl.tasks.base.BaseTask`.
        scheduler: See :class:`~objmtl.tasks.base.BaseTask`.
        run_config: See :class:`~objmtl.tasks.base.BaseTask`.
    """

    main_metric = "ap"

    def __init__(self, *, model: nn.Module, class_names: Sequence[str] | None = None,
                 keypoint_names: Sequence[str] | None = None, skeleton: Sequence[Sequence[int]] = (),
                 flip_pairs: Sequence[Sequence[int]] = (), sigmas: Sequence[float] | None = None,
                 flip_test: bool = True, decode: str = "dark", keypoint_threshold: float = 0.2,
                 optimizer: OptimizerFactory | None = None, scheduler: SchedulerFactory | None = None,
                 run_config: dict[str, Any] | None = None, nonfinite_loss: str = "stop") -> None:
        super().__init__(model=model, optimizer=optimizer, scheduler=scheduler, run_config=run_config,
                         nonfinite_loss=nonfinite_loss)
        k = int(model.num_keypoints)
        if keypoint_names is not None and len(keypoint_names) != k:
            raise ValueError(f"model has {k} keypoints for {len(keypoint_names)} keypoint names")
        self.class_names = list(class_names) if class_names is not None else None
        self.keypoint_names = list(keypoint_names) if keypoint_names is not None else None
        self.skeleton = [list(p) for p in skeleton]
        self.flip_pairs = [list(p) for p in flip_pairs]
        self.flip_test, self.decode, self.keypoint_threshold = flip_test, decode, keypoint_threshold
        self.sigmas = oks_sigmas(num_keypoints=k, sigmas=sigmas, names=keypoint_names)
        coco_log = logging.getLogger("faster_coco_eval")
        if coco_log.level == logging.NOTSET:
            coco_log.setLevel(logging.WARNING)
        self.val_metric = KeypointMetrics(sigmas=self.sigmas)
        self.test_metric = KeypointMetrics(sigmas=self.sigmas)
        self.dropped: dict[str, dict[str, int]] = {}

    def forward(self, crops: Tensor) -> Tensor:
        return self.model(crops)

    def _checked(self, heatmaps: Tensor, batch: dict[str, Any]) -> None:
        if heatmaps.shape[-2:] != batch["heatmaps"].shape[-2:]:
            h, w = batch["crops"].shape[-2:]
            raise UserError(f"data.image_size [{h}, {w}]: the model's heatmaps are {tuple(heatmaps.shape[-2:])} "
                            f"but the targets {tuple(batch['heatmaps'].shape[-2:])}; use sides that are multiples "
                            f"of 32 and data.train_transform.heatmap_stride={self.model.stride}")

    def _log_dropped(self, batch: dict[str, Any], stage: str) -> None:
        n = sum(batch["dropped"].values())
        self.log(f"{stage}/dropped_persons", float(n), reduce_fx="sum", batch_size=len(batch["images"]),
                 on_step=False, on_epoch=True)
        if stage != "train":
            counts = self.dropped.setdefault(stage, dict.fromkeys(DROP_REASONS, 0))
            for reason, count in batch["dropped"].items():
                counts[reason] = counts.get(reason, 0) + int(count)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor | None:
        losses = self.training_losses(batch)
        return losses["loss"] if len(batch["crops"]) == 0 else self.checked_loss(losses)

    def training_losses(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """The batch's loss terms (``loss`` is their total), logged under ``train/``; a batch without persons
        gives a zero that still reaches every parameter."""
        crops = batch["crops"]
        self._log_dropped(batch, "train")
        if len(crops) == 0:  # no person in the batch: a zero that still reaches every parameter
            loss = sum((p.sum() for p in self.model.parameters() if p.requires_grad), crops.new_zeros(())) * 0.0
            self.log("train/loss", loss, prog_bar=True, batch_size=1)
            return {"loss": loss}
        heatmaps = self(crops)
        self._checked(heatmaps, batch)
        losses = self.model.loss(heatmaps, batch["heatmaps"], batch["weights"])
        self.log("train/loss", losses["loss"], prog_bar=True, batch_size=len(crops))
        return losses

    def _predict(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """Keypoints (P, K, 3) x, y, confidence in original pixels, and the heatmaps of the plain crops."""
        crops = batch["crops"]
        heatmaps = self(crops)
        averaged = heatmaps
        if self.flip_test and len(crops):
            averaged = 0.5 * (heatmaps + flip_heatmaps(self(crops.flip(-1)), self.flip_pairs))
        coords, maxvals = decode_heatmaps(averaged, method=self.decode)
        stride = crops.shape[-1] / max(heatmaps.shape[-1], 1)
        xy = keypoints_to_original(coords, batch["inv_affine"], stride=stride)
        return torch.cat([xy.float(), maxvals[..., None]], dim=-1), heatmaps

    def _person_scores(self, keypoints: Tensor, box_scores: Tensor) -> Tensor:
        conf = keypoints[..., 2]
        above = conf > self.keypoint_threshold
        mean = (conf * above).sum(-1) / above.sum(-1).clamp_min(1)
        mean = torch.where(above.any(-1), mean, conf.mean(-1))  # none above: still a ranking, not all zeros
        return box_scores.to(mean) * mean

    def _split(self, batch: dict[str, Any], keypoints: Tensor) -> tuple[list[dict[str, Tensor]], list[dict[str, Any]]]:
        """Per-image predictions and ground truth (original pixels)."""
        scores = self._person_scores(keypoints, batch["box_scores"])
        preds, targets = [], []
        for i, image in enumerate(batch["images"]):
            mine = batch["person_image"] == i
            preds.append({"keypoints": keypoints[mine], "scores": scores[mine], "labels": batch["labels"][mine],
                          "boxes": batch["boxes"][mine], "gt_index": batch["gt_index"][mine]})
            targets.append({"image_id": image["image_id"], "orig_size": image["orig_size"], **image["gt"]})
        return preds, targets

    def trains_on(self, batch: dict[str, Any]) -> bool:
        return len(batch["crops"]) > 0

    def _eval_start(self, stage: str) -> None:
        self.dropped.pop(stage, None)

    def _eval_step(self, batch: dict[str, Any], stage: str, dataloader_idx: int = 0) -> dict[str, list]:
        self._log_dropped(batch, stage)
        keypoints, heatmaps = self._predict(batch)
        if len(heatmaps):
            self._checked(heatmaps, batch)
            loss = self.model.loss(heatmaps, batch["heatmaps"], batch["weights"])["loss"]
            self.log_eval_loss(stage, loss, batch_size=len(heatmaps))
        preds, targets = self._split(batch, keypoints)
        (self.val_metric if stage == "val" else self.test_metric).update(preds, targets)
        return {"preds": preds, "targets": targets}

    def _eval_end(self, stage: str) -> None:
        metric = self.val_metric if stage == "val" else self.test_metric
        result = metric.compute()
        self.log_dict({f"{stage}/{k}": float(result[k]) for k in _LOGGED if k not in _SHOWN})
        self.log_dict({f"{stage}/{k}": float(result[k]) for k in _SHOWN}, prog_bar=stage == "val")
        metric.reset()

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Tensor]]:
        """Per image: ``keypoints`` (P, K, 3) in original pixels, ``scores``, ``labels``, ``boxes``."""
        keypoints, _ = self._predict(batch)
        return self._split(batch, keypoints)[0]
