"""Image regression: one or more continuous targets per image, learnt as normalised values."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import PearsonCorrCoef, R2Score
from torchmetrics.aggregation import CatMetric
from torchmetrics.regression import MeanAbsoluteError, MeanSquaredError

from objmtl.errors import UserError
from objmtl.tasks.base import BaseTask, OptimizerFactory, SchedulerFactory
from objmtl.viz.reg_plots import plot_regression

__all__ = ["LOSSES", "RegressionTask"]

LOSSES = {"l1": F.l1_loss, "mse": F.mse_loss, "smooth_l1": F.smooth_l1_loss}


class _PerTarget(nn.Module):
    """MAE, RMSE, R² and Pearson's r of each target (torchmetrics), in the source's units."""

    def __init__(self, num_targets: int) -> None:
        super().__init__()
        t = num_targets
        self.metrics = nn.ModuleDict({
            "mae": nn.ModuleList([MeanAbsoluteError() for _ in range(t)]),
            "rmse": nn.ModuleList([MeanSquaredError(squared=False) for _ in range(t)]),
        })
        self.r2 = R2Score(multioutput="raw_values") if t > 1 else R2Score()
        self.pearson = PearsonCorrCoef(num_outputs=t)
        self.num_targets = t

    def update(self, pred: Tensor, true: Tensor) -> None:
        for j in range(self.num_targets):
            self.metrics["mae"][j].update(pred[:, j], true[:, j])
            self.metrics["rmse"][j].update(pred[:, j], true[:, j])
        self.r2.update(pred if self.num_targets > 1 else pred[:, 0], true if self.num_targets > 1 else true[:, 0])
        self.pearson.update(pred if self.num_targets > 1 else pred[:, 0], true if self.num_targets > 1 else true[:, 0])

    def compute(self) -> dict[str, Tensor]:
        """``{metric: Tensor[T]}`` for mae, rmse, r2 and pearson."""
        out = {name: torch.stack([m.compute() for m in self.metrics[name]])
               for name in ("mae", "rmse")}
        out["r2"] = self.r2.compute().reshape(-1)
        out["pearson"] = self.pearson.compute().reshape(-1)
        return out

    def reset(self) -> None:
        for metric in (*self.metrics["mae"], *self.metrics["rmse"], self.r2, self.pearson):
            metric.reset()


class RegressionTask(BaseTask):
    """Trains a :class:`~objmtl.models.regressor.Regressor` on batches ``{"image", "target"}``.

    The model predicts ``(value - mean) / std`` per target (``target_mean``, ``target_std``: ``meta.json``'s,
    from the train split); the loss (``l1``, ``mse`` or ``smooth_l1``) is taken on those normalised values,
    so targets of different scales weigh alike. Everything reported is in the source's units: ``val/mae``,
    ``val/rmse``, ``val/r2`` and ``val/pearson`` (means over the targets) and, with several targets, the same
    per target (``val/mae_<name>`` ...), under ``test/`` too; ``plots/scatter_<stage>.png`` and
    ``plots/residuals_<stage>.png`` after each evaluation.
    """

    main_metric = "r2"

    def __init__(self, *, model: nn.Module, target_names: Sequence[str], target_mean: Sequence[float],
                 target_std: Sequence[float], loss: str = "smooth_l1", optimizer: OptimizerFactory | None = None,
                 scheduler: SchedulerFactory | None = None, run_config: dict[str, Any] | None = None,
                 nonfinite_loss: str = "stop") -> None:
        super().__init__(model=model, optimizer=optimizer, scheduler=scheduler, run_config=run_config,
                         nonfinite_loss=nonfinite_loss)
        self.target_names = [str(n) for n in target_names]
        t = len(self.target_names)
        if t == 0:
            raise UserError("task=reg: meta.json names no targets (its 'targets' list is empty)")
        if len(target_mean) != t or len(target_std) != t:
            raise UserError(f"task=reg: {t} targets but {len(target_mean)} means and {len(target_std)} stds "
                            "(meta.json's target_mean / target_std)")
        if any(not s > 0 for s in target_std):
            raise UserError(f"task=reg: target_std {list(target_std)} must all be > 0 (a constant target "
                            "cannot be learnt)")
        if loss not in LOSSES:
            raise UserError(f"task.module.loss={loss}: use one of {', '.join(LOSSES)}")
        if getattr(model, "num_targets", t) != t:
            raise UserError(f"model has {model.num_targets} outputs for {t} targets ({self.target_names})")
        self.loss_name = loss
        self.register_buffer("mean", torch.tensor([float(m) for m in target_mean]), persistent=False)
        self.register_buffer("std", torch.tensor([float(s) for s in target_std]), persistent=False)
        self.eval_metrics = nn.ModuleDict({"val": _PerTarget(t), "test": _PerTarget(t)})
        self.pred_cat, self.true_cat = CatMetric(), CatMetric()

    def forward(self, images: Tensor) -> Tensor:
        """Predictions in the source's units, ``[N, T]``."""
        return self.model(images) * self.std + self.mean

    def _loss(self, normalised: Tensor, target: Tensor) -> Tensor:
        return LOSSES[self.loss_name](normalised, (target - self.mean) / self.std)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor | None:
        return self.checked_loss(self.training_losses(batch))

    def training_losses(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """The batch's loss (normalised units), logged under ``train/``."""
        out = self.model(batch["image"])
        loss = self._loss(out, batch["target"])
        mae = ((out.detach() * self.std + self.mean) - batch["target"]).abs().mean()
        self.log_dict({"train/loss": loss, "train/mae": mae}, prog_bar=True, batch_size=len(batch["target"]))
        return {"loss": loss}

    def _eval_start(self, stage: str) -> None:
        self.pred_cat.reset()
        self.true_cat.reset()

    def _eval_step(self, batch: dict[str, Tensor], stage: str, dataloader_idx: int = 0) -> dict[str, Tensor]:
        out = self.model(batch["image"])
        target = batch["target"]
        self.log_eval_loss(stage, self._loss(out, target), batch_size=len(target), prog_bar=stage == "val")
        pred = (out * self.std + self.mean).detach().float()
        self.eval_metrics[stage].update(pred, target)
        self.pred_cat.update(pred)
        self.true_cat.update(target)
        return {"values": pred}  # for objmtl-test --out

    def _eval_end(self, stage: str) -> None:
        metrics = self.eval_metrics[stage]
        per_target = metrics.compute()
        metrics.reset()
        logged = {f"{stage}/{name}": values.mean() for name, values in per_target.items()}
        if len(self.target_names) > 1:
            for name, values in per_target.items():
                logged.update({f"{stage}/{name}_{t}": v for t, v in zip(self.target_names, values, strict=True)})
        main = f"{stage}/{self.main_metric}"
        self.log(main, logged.pop(main), prog_bar=True, sync_dist=True)
        self.log_dict(logged, sync_dist=True)
        pred, true = self.pred_cat.compute(), self.true_cat.compute()  # every rank's, gathered
        self.pred_cat.reset()
        self.true_cat.reset()
        if self.trainer.is_global_zero and not self.trainer.sanity_checking and pred.numel():
            t = len(self.target_names)
            plot_regression(pred.reshape(-1, t).cpu().numpy(), true.reshape(-1, t).cpu().numpy(),
                            self.target_names, self.plot_dir, stage=stage)

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return {"values": self(batch["image"])}
