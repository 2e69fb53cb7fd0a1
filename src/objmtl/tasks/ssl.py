"""Self-supervised pretraining (MoBY), evaluated by k-NN classification of backbone features."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from objmtl.metrics.knn import knn_predict
from objmtl.models.ssl.moby import cosine_momentum
from objmtl.tasks.base import BaseTask, OptimizerFactory, SchedulerFactory

__all__ = ["SSLTask"]

_BANK = 0  # evaluation loader 0: the training split with the evaluation transform (ShardDataModule)


class SSLTask(BaseTask):
    """Trains a :class:`~objmtl.models.ssl.MoBY` on batches ``{"view1", "view2"}``.

    Evaluation reads two loaders: first the training split (pooled backbone features and labels form the
    memory bank), then the val / test split, whose images are classified by :func:`knn_predict` against
    the bank. Logs ``train/loss`` (and its two directions), ``train/momentum`` and ``{val,test}/knn_top1``.

    Args:
        model: a MoBY model (``loss(view1, view2, momentum=)`` and ``forward(images) -> features``).
        num_classes: classes of the shards' labels (for the k-NN vote).
        knn_k: neighbours that vote.
        knn_temperature: vote weights ``exp(similarity / knn_temperature)``.
    """

    def __init__(self, *, model: nn.Module, num_classes: int, optimizer: OptimizerFactory | None = None,
                 scheduler: SchedulerFactory | None = None, knn_k: int = 20, knn_temperature: float = 0.07,
                 run_config: dict[str, Any] | None = None, nonfinite_loss: str = "stop") -> None:
        super().__init__(model=model, optimizer=optimizer, scheduler=scheduler, run_config=run_config,
                         nonfinite_loss=nonfinite_loss)
        self.num_classes, self.knn_k, self.knn_temperature = num_classes, knn_k, knn_temperature
        self.knn_acc = nn.ModuleDict({s: MulticlassAccuracy(num_classes=num_classes, average="micro")
                                      for s in ("val", "test")})
        self._bank: list[tuple[Tensor, Tensor]] = []  # (features (N, C), labels (N,)) per bank batch

    def forward(self, images: Tensor) -> Tensor:
        return self.model(images)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor | None:
        total = int(self.trainer.estimated_stepping_batches)
        momentum = cosine_momentum(self.model.base_momentum, self.trainer.global_step, total)
        losses = self.model.loss(batch["view1"], batch["view2"], momentum=momentum)
        n = len(batch["view1"])
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, prog_bar=True, batch_size=n)
        self.log("train/momentum", momentum, batch_size=n)
        return self.checked_loss(losses)

    # ---- k-NN evaluation ----

    def _eval_step(self, batch: dict[str, Tensor], dataloader_idx: int, stage: str) -> dict[str, Tensor]:
        feats = self(batch["image"]).detach().float()
        if dataloader_idx == _BANK:
            self._bank.append((feats, batch["label"]))
            return {}
        if not self._bank:
            raise RuntimeError("k-NN evaluation: the memory bank loader (training split) yielded no batch")
        if len(self._bank) > 1:  # the bank is complete once the second loader starts: concatenate once
            self._bank = [tuple(torch.cat(t) for t in zip(*self._bank, strict=True))]  # type: ignore[list-item]
        bank, labels = self._bank[0]
        scores = knn_predict(feats, bank, labels, num_classes=self.num_classes, k=self.knn_k,
                             temperature=self.knn_temperature)
        self.knn_acc[stage].update(scores, batch["label"])
        top, pred = scores.max(1)
        return {"labels": pred, "scores": top / scores.sum(1).clamp_min(1e-12)}

    def _eval_end(self, stage: str) -> None:
        self.log(f"{stage}/knn_top1", self.knn_acc[stage].compute(), prog_bar=True, sync_dist=True)
        self.knn_acc[stage].reset()
        self._bank.clear()

    def on_validation_epoch_start(self) -> None:
        self._bank.clear()

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        return self._eval_step(batch, dataloader_idx, "val")

    def on_validation_epoch_end(self) -> None:
        self._eval_end("val")

    def on_test_epoch_start(self) -> None:
        self._bank.clear()

    def test_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        return self._eval_step(batch, dataloader_idx, "test")

    def on_test_epoch_end(self) -> None:
        self._eval_end("test")

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return {"features": self(batch["image"])}
