"""Image classification: cross-entropy with label smoothing, top-1/top-5 and a confusion matrix."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from objmtl.tasks.base import BaseTask, OptimizerFactory, SchedulerFactory
from objmtl.viz.plots import plot_confusion_matrix

__all__ = ["ClassificationTask"]


class ClassificationTask(BaseTask):
    """Trains a :class:`~objmtl.models.Classifier` on batches ``{"image", "label"}``.

    Logs ``train/loss``, ``val/loss``, ``val/acc`` (top-1), ``val/acc_top5`` and the same under
    ``test/``; writes ``plots/confusion_{val,test}.png`` at the end of each evaluation.
    """

    main_metric = "acc"

    def __init__(self, *, model: nn.Module, class_names: list[str], optimizer: OptimizerFactory | None = None,
                 scheduler: SchedulerFactory | None = None, label_smoothing: float = 0.0,
                 run_config: dict[str, Any] | None = None, nonfinite_loss: str = "stop") -> None:
        super().__init__(model=model, optimizer=optimizer, scheduler=scheduler, run_config=run_config,
                         nonfinite_loss=nonfinite_loss)
        self.class_names = list(class_names)
        self.label_smoothing = label_smoothing
        k = len(self.class_names)
        if getattr(model, "num_classes", k) != k:
            raise ValueError(f"model has {model.num_classes} outputs for {k} class names")
        metrics = MetricCollection({"acc": MulticlassAccuracy(num_classes=k, average="micro")})
        if k > 5:
            metrics.add_metrics({"acc_top5": MulticlassAccuracy(num_classes=k, top_k=5, average="micro")})
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")
        self.confusion = MulticlassConfusionMatrix(num_classes=k)

    def forward(self, images: Tensor) -> Tensor:
        return self.model(images)

    def _loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        return F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor | None:
        return self.checked_loss(self.training_losses(batch))

    def training_losses(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """The batch's loss terms (``loss`` is their total), logged under ``train/``."""
        logits = self(batch["image"])
        loss = self._loss(logits, batch["label"])
        acc = (logits.argmax(1) == batch["label"]).float().mean()
        self.log_dict({"train/loss": loss, "train/acc": acc}, prog_bar=True,
                      batch_size=len(batch["label"]))
        return {"loss": loss}

    def _eval_step(self, batch: dict[str, Tensor], stage: str, dataloader_idx: int = 0) -> dict[str, Tensor]:
        logits = self(batch["image"])
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        metrics.update(logits, batch["label"])
        self.confusion.update(logits, batch["label"])
        self.log_eval_loss(stage, self._loss(logits, batch["label"]), batch_size=len(batch["label"]),
                           prog_bar=stage == "val")
        scores, labels = torch.softmax(logits.detach().float(), dim=1).max(1)
        return {"labels": labels, "scores": scores}  # for objmtl-test --out

    def _eval_end(self, stage: str) -> None:
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        self.log_dict(metrics.compute(), prog_bar=True, sync_dist=True)
        metrics.reset()
        matrix = self.confusion.compute()
        self.confusion.reset()
        if self.trainer.is_global_zero and not self.trainer.sanity_checking:
            plot_confusion_matrix(matrix.cpu().numpy(), self.class_names,
                                  self.plot_dir / f"confusion_{stage}.png")

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        probs = torch.softmax(self(batch["image"]), dim=1)
        scores, labels = probs.max(1)
        return {"labels": labels, "scores": scores, "probs": probs}
