"""Self-supervised pretraining (MoBY), evaluated by k-NN classification of backbone features."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from objmtl.distributed import all_gather_rows
from objmtl.metrics.knn import knn_predict
from objmtl.models.ssl.moby import cosine_momentum
from objmtl.tasks.base import BaseTask, OptimizerFactory, SchedulerFactory

__all__ = ["SSLTask"]

_BANK = 0  # evaluation loader 0: the training split with the evaluation transform (ShardDataModule)


class SSLTask(BaseTask):
    """Trains a :class:`~objmtl.models.ssl.MoBY` on batches ``{"view1", "view2"}``.

    Evaluation reads two loaders: first the training split (pooled backbone features and labels form the
    memory bank), then the val / test split, whose images are classified by :func:`knn_predict` at the end
    of the epoch, against the bank gathered from every rank (DDP ranks each read part of the split). Logs
    ``train/loss`` (and its two directions), ``train/momentum`` and ``{val,test}/knn_top1``.

    Args:
        model: a MoBY model (``loss(view1, view2, momentum=)``, ``forward(images) -> features`` and
            ``feature_dim``).
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
        self._queries: list[tuple[Tensor, Tensor]] = []  # the same per val / test batch

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

    def _eval_start(self, stage: str) -> None:
        self._bank.clear()
        self._queries.clear()

    def _eval_step(self, batch: dict[str, Tensor], stage: str, dataloader_idx: int = 0) -> None:
        feats = self(batch["image"]).detach().float()
        (self._bank if dataloader_idx == _BANK else self._queries).append((feats, batch["label"]))

    def _eval_end(self, stage: str) -> None:
        """Votes each val / test image against the training split's features of all ranks (gathered here,
        so under DDP the bank is the whole split, as in one process), then logs the accuracy."""
        bank, labels = self._stacked(self._bank)
        bank, labels = all_gather_rows(bank), all_gather_rows(labels)
        if not len(bank):  # the gathered bank: every rank decides alike (no rank left waiting in a collective)
            raise RuntimeError("k-NN evaluation: the memory bank loader (training split) yielded no batch")
        queries, targets = self._stacked(self._queries)
        if len(queries):
            scores = knn_predict(queries, bank, labels, num_classes=self.num_classes, k=self.knn_k,
                                 temperature=self.knn_temperature)
            self.knn_acc[stage].update(scores, targets)
        self.log(f"{stage}/knn_top1", self.knn_acc[stage].compute(), prog_bar=True, sync_dist=True)
        self.knn_acc[stage].reset()
        self._bank.clear()
        self._queries.clear()

    def _stacked(self, parts: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
        """(features (N, C), labels (N,)) of the batches in ``parts``; N = 0 when there are none."""
        if not parts:
            return (torch.zeros(0, self.model.feature_dim, device=self.device),
                    torch.zeros(0, dtype=torch.long, device=self.device))
        feats, labels = zip(*parts, strict=True)
        return torch.cat(feats), torch.cat(labels)

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return {"features": self(batch["image"])}
