"""Multi-task learning: one backbone, heads of several task types, each trained on the samples that carry
its annotations."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import Metric

from objmtl.errors import UserError
from objmtl.models.multitask import MultiTaskModel
from objmtl.tasks.base import BaseTask, OptimizerFactory, SchedulerFactory

__all__ = ["MultiTaskTask"]

WEIGHTINGS = ("fixed", "uncertainty")


def _zero_times(params: Any, device: torch.device) -> Tensor:
    """``0 * sum(params)``: a zero loss term through which every one of ``params`` gets a (zero) gradient."""
    return sum((p.sum() for p in params if p.requires_grad), torch.zeros((), device=device)) * 0.0


def _scoped(name: str, head: str) -> str:
    """``train/loss`` -> ``train/det/loss``: a head's logs under its name, after the stage."""
    stage, _, rest = name.partition("/")
    return f"{stage}/{head}/{rest}" if rest else f"{head}/{stage}"


class MultiTaskTask(BaseTask):
    """Trains a :class:`~objmtl.models.multitask.MultiTaskModel`: each head through its single-task
    LightningModule (the same losses, metrics, plots and outputs as ``task=cls|det|seg|pose``), on the part
    of each batch that carries its annotations (:class:`~objmtl.data.mtl_samples.MultiTaskSamples`).

    The training loss is ``sum_h w_h * L_h`` (``weighting=fixed``, ``w_h`` from ``loss_weights``, default 1)
    or, with ``weighting=uncertainty`` (Kendall, Gal and Cipolla, CVPR 2018), ``sum_h exp(-s_h) * w_h * L_h
    + s_h`` with one learned log-variance ``s_h`` per head (logged as ``train/weight_<head>``). A head with
    no sample in a batch adds zero times its parameters, so it gets a zero gradient and every parameter
    takes part in the step (DDP needs that: ObjectiveMTL's FAQ 7).

    Each head logs under its name (``train/det/loss``, ``val/seg/miou``, ...); ``val/score``, the mean of
    the heads' main metrics (each head task's ``main_metric``), picks the best checkpoint. Evaluation reads one loader per
    head (the datamodule's order is ``task.heads``).

    Args:
        model: the shared backbone and its heads.
        heads: head -> a factory (Hydra ``_partial_``) of its single-task LightningModule, given the head's
            model; entries for heads the model does not have are ignored.
        loss_weights: head -> ``w_h`` (entries of heads the model does not have are ignored).
        weighting: ``fixed`` or ``uncertainty``.
        main_metrics: head -> the metric (after ``val/<head>/``) averaged into ``val/score``.
    """

    @classmethod
    def check_trainer(cls, trainer: Mapping[str, Any]) -> None:
        if trainer.get("sync_batchnorm"):
            raise UserError("trainer.sync_batchnorm=true does not fit task=mtl: each head present in a step runs the "
                            "backbone once, ranks may hold different heads, and SyncBatchNorm's collectives would "
                            "then pair up wrongly (set trainer.sync_batchnorm=false)")

    def __init__(self, *, model: MultiTaskModel, heads: dict[str, Callable[..., BaseTask]],
                 loss_weights: dict[str, float] | None = None, weighting: str = "fixed",
                 main_metrics: dict[str, str] | None = None, optimizer: OptimizerFactory | None = None,
                 scheduler: SchedulerFactory | None = None, run_config: dict[str, Any] | None = None,
                 nonfinite_loss: str = "stop") -> None:
        super().__init__(model=model, optimizer=optimizer, scheduler=scheduler, run_config=run_config,
                         nonfinite_loss=nonfinite_loss)
        if weighting not in WEIGHTINGS:
            raise UserError(f"task.module.weighting={weighting}: use one of {', '.join(WEIGHTINGS)}")
        self.head_names: list[str] = list(model.head_names)
        weights = dict(loss_weights or {})
        unknown = sorted(set(weights) - set(heads))
        if unknown:
            raise UserError(f"task.module.loss_weights: {unknown} are not head types ({', '.join(heads)})")
        self.loss_weights = {h: float(weights.get(h, 1.0)) for h in self.head_names}
        self.weighting = weighting
        tasks: dict[str, BaseTask] = {}
        for name in self.head_names:
            if name not in heads:
                raise UserError(f"task.module.heads.{name}: missing (the LightningModule of that head)")
            task = heads[name](model=model.heads[name])
            del task._modules["model"]  # the head's weights live once, under model.heads
            object.__setattr__(task, "model", model.heads[name])
            task._log_to = [self._head_logger(name)]
            tasks[name] = task
        self.tasks = nn.ModuleDict(tasks)
        self.main_metrics = {**{h: t.main_metric for h, t in tasks.items()}, **dict(main_metrics or {})}
        self.log_vars = nn.Parameter(torch.zeros(len(self.head_names))) if weighting == "uncertainty" else None
        self._main_values: dict[str, float] = {}

    # ---- logging ----

    def _head_logger(self, head: str) -> Callable[..., None]:
        def log_for_head(name: str, value: Any, **kwargs: Any) -> None:
            in_step = (self._current_fx_name or "").endswith("_step")
            if isinstance(value, Metric) and in_step:
                return  # a head's eval loss: updated in the step, logged for every head at the epoch's end
            if in_step:  # ranks may hold different heads in a step: no collective there
                kwargs["sync_dist"] = False
            kwargs["add_dataloader_idx"] = False
            scoped = _scoped(name, head)
            stage = name.partition("/")[0]
            if stage in ("val", "test") and name == f"{stage}/{self.main_metrics.get(head)}":
                self._main_values[scoped] = float(value)
            self.log(scoped, value, **kwargs)

        return log_for_head

    def setup(self, stage: str) -> None:
        for task in self.tasks.values():
            task.trainer = self.trainer
        data_heads = getattr(getattr(self.trainer, "datamodule", None), "heads", None)
        if data_heads is not None and list(data_heads) != self.head_names:
            raise UserError(f"data.heads={list(data_heads)} but the model's heads are {self.head_names}: both follow "
                            "task.heads; set that one")

    def _param_groups(self) -> list[dict[str, Any]]:
        groups = super()._param_groups()
        if self.log_vars is not None:
            groups.append({"params": [self.log_vars], "weight_decay": 0.0})
        return groups

    # ---- training ----

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor | None:
        return self.checked_loss(self.training_losses(batch))

    def training_losses(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """``loss``: the weighted total over the heads (every parameter in its graph), and each present
        head's own loss as ``loss_<head>``."""
        # zero times the trunk: it takes part in the step even when no head that uses it has samples here
        total = _zero_times(self.model.backbone.parameters(), self.device)
        terms: dict[str, Tensor] = {}
        for i, head in enumerate(self.head_names):
            part = batch.get(head)
            if part is not None and not self.tasks[head].trains_on(part):
                part = None  # e.g. pose on images without persons: a structural zero, no signal for the loss weights
            if part is None:  # no sample of this batch carries the head's annotations
                zero = _zero_times(self.model.head_parameters(head), self.device)
                if self.log_vars is not None:
                    zero = zero + self.log_vars[i] * 0.0
                term = zero
            else:
                loss = self.tasks[head].training_losses(part)["loss"]
                terms[f"loss_{head}"] = loss.detach()
                term = self.loss_weights[head] * loss
                if self.log_vars is not None:
                    term = torch.exp(-self.log_vars[i]) * term + self.log_vars[i]
                    self.log(f"train/weight_{head}", torch.exp(-self.log_vars[i].detach()))
            total = total + term
        self.log("train/loss", total, prog_bar=True, batch_size=int(batch["samples"]))
        self.log("data/unused_samples", float(batch.get("unused", 0)), on_step=False, on_epoch=True, reduce_fx="sum",
                 sync_dist=True, batch_size=int(batch["samples"]))  # every rank logs it every step: the sum is safe
        return {"loss": total, **terms}

    # ---- evaluation ----

    def _eval_step(self, batch: dict[str, Any], stage: str, dataloader_idx: int = 0) -> Any:
        head = self.head_names[dataloader_idx]
        part = batch.get(head)
        if part is None:
            return None
        return self.tasks[head]._eval_step(part, stage)

    def _eval_start(self, stage: str) -> None:
        self._main_values = {}
        for task in self.tasks.values():
            task._eval_start(stage)

    def _eval_end(self, stage: str) -> None:
        for head, task in self.tasks.items():
            self.log(f"{stage}/{head}/loss", task.eval_loss[stage])  # on every rank: it syncs
            task._eval_end(stage)
        keys = [f"{stage}/{h}/{self.main_metrics[h]}" for h in self.head_names]
        missing = [k for k in keys if k not in self._main_values]
        if missing:
            raise UserError(f"task.module.main_metrics: {', '.join(missing)} was not logged, so {stage}/score cannot "
                            f"be formed (name a metric each head logs, e.g. {self.main_metrics})")
        self.log(f"{stage}/score", sum(self._main_values[k] for k in keys) / len(keys), prog_bar=True)

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        """Each present head's predictions (its single-task ``predict_step``): ``{head: predictions}``."""
        return {h: self.tasks[h].predict_step(batch[h], batch_idx) for h in self.head_names if h in batch}
