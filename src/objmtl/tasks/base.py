"""What every task shares: optimizer and schedule from config, checkpoints that rebuild themselves."""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import WeightAveraging
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor, nn
from torch.optim import Optimizer
from torchmetrics import MeanMetric

import objmtl
from objmtl.errors import UserError

__all__ = ["BaseTask"]

log = logging.getLogger(__name__)

OptimizerFactory = Callable[..., Optimizer]
SchedulerFactory = Callable[..., Any]


def _collect_rng() -> dict[str, Any]:
    """RNG states as tensors and plain lists, so the checkpoint loads with ``weights_only=True``."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [name, keys.tolist(), pos, has_gauss, gauss],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class BaseTask(L.LightningModule):
    """A model, its optimizer and schedule, and the config that rebuilds it from a checkpoint.

    Args:
        model: the network (``kind`` attribute names its task type).
        optimizer: ``params -> Optimizer`` (a Hydra ``_partial_``).
        scheduler: ``(optimizer, total_steps=, steps_per_epoch=) -> LRScheduler`` or None;
            stepped every optimizer step.
        run_config: the run config as plain containers; stored in every checkpoint.
        nonfinite_loss: a training loss that is NaN or infinite: ``stop`` the run with a message naming the
            step and the loss terms, or ``skip`` the step (no backward, no optimizer step; counted in
            ``train/nonfinite_skipped``). Under DDP all ranks skip when one does.
    """

    def __init__(self, *, model: nn.Module, optimizer: OptimizerFactory | None = None,
                 scheduler: SchedulerFactory | None = None, run_config: dict[str, Any] | None = None,
                 nonfinite_loss: str = "stop") -> None:
        super().__init__()
        if nonfinite_loss not in ("stop", "skip"):
            raise UserError(f"nonfinite_loss={nonfinite_loss}: use stop or skip")
        self.model = model
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.run_config = run_config or {}
        self.nonfinite_loss = nonfinite_loss
        self._nonfinite_skipped = 0
        self.eval_loss = nn.ModuleDict({"val": MeanMetric(), "test": MeanMetric()})
        self._log_to: list[Callable[..., None]] = []  # set when this task is a head of a multi-task one

    main_metric: ClassVar[str] = ""  # as a head of task=mtl: the metric (after ``val/<head>/``) in val/score

    @classmethod
    def check_trainer(cls, trainer: Mapping[str, Any]) -> None:
        """A UserError, before anything is built, for trainer settings (``cfg.trainer``) this task cannot
        train under; ``objmtl-train`` calls it."""

    def log(self, name: str, value: Any, *args: Any, **kwargs: Any) -> None:
        """Lightning's ``log``; a head of :class:`~objmtl.tasks.multitask.MultiTaskTask` logs through it."""
        if self._log_to:
            self._log_to[0](name, value, **kwargs)
        else:
            super().log(name, value, *args, **kwargs)

    def trains_on(self, batch: Any) -> bool:
        """Whether ``batch`` holds anything for the loss (a head of task=mtl with nothing to learn from in a
        step adds a zero term instead)."""
        return True

    # ---- optimisation ----

    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            raise ValueError("no optimizer configured")
        optimizer = self.optimizer_factory(self._param_groups())
        for group in optimizer.param_groups:  # before the scheduler reads the base rates
            group["lr"] = group["lr"] * group.get("lr_scale", 1.0)
        if self.scheduler_factory is None:
            return optimizer
        total = int(self.trainer.estimated_stepping_batches)
        epochs = self.trainer.max_epochs if self.trainer.max_epochs and self.trainer.max_epochs > 0 else 1
        per_epoch = max(1, math.ceil(total / epochs))
        scheduler = self.scheduler_factory(optimizer, total_steps=total, steps_per_epoch=per_epoch)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def checked_loss(self, losses: dict[str, Tensor]) -> Tensor | None:
        """``losses["loss"]`` for ``training_step`` to return, or None (Lightning skips the step) when it is
        not finite and ``nonfinite_loss=skip``; with ``stop`` a UserError naming the step and the terms."""
        loss = losses["loss"]
        bad = not bool(torch.isfinite(loss.detach()).all())
        if not self.trainer.strategy.reduce_boolean_decision(bad, all=False):  # any rank's -> every rank's
            return loss
        terms = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in losses.items() if v.numel() == 1)
        step = self.trainer.global_step
        if self.nonfinite_loss == "stop":
            raise UserError(f"step {step}: the training loss is not finite ({terms}); lower optim.lr, set "
                            "trainer.gradient_clip_val or check the data (nonfinite_loss=skip skips such steps)")
        self._nonfinite_skipped += 1
        log.warning("step %d: the training loss is not finite (%s): step skipped (%d this epoch)", step, terms,
                    self._nonfinite_skipped)
        return None

    # ---- evaluation ----

    def log_eval_loss(self, stage: str, loss: Tensor, *, batch_size: int, prog_bar: bool = False) -> None:
        """Logs ``STAGE/loss``: the per-sample mean over the epoch, exact under DDP even when ranks hold
        unequal shares (Lightning's mean of a logged value averages the integer batch counts of the
        ranks there, which rounds)."""
        metric = self.eval_loss[stage]
        metric.update(loss.detach().float(), weight=batch_size)
        self.log(f"{stage}/loss", metric, prog_bar=prog_bar)

    # Lightning's six evaluation hooks, once for both stages: a task writes _eval_step and _eval_end (and, when it
    # keeps per-epoch state, _eval_start) with the stage ("val" or "test") as an argument.

    def _eval_start(self, stage: str) -> None:
        """Before an evaluation epoch of ``stage``."""

    def _eval_step(self, batch: Any, stage: str, dataloader_idx: int = 0) -> Any:
        """One evaluation batch: update the stage's metrics; the return value reaches ``objmtl-test --out``."""
        raise NotImplementedError

    def _eval_end(self, stage: str) -> None:
        """After an evaluation epoch of ``stage``: log its metrics and reset them."""

    def on_validation_epoch_start(self) -> None:
        self._eval_start("val")

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
        return self._eval_step(batch, "val", dataloader_idx)

    def on_validation_epoch_end(self) -> None:
        self._eval_end("val")

    def on_test_epoch_start(self) -> None:
        self._eval_start("test")

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
        return self._eval_step(batch, "test", dataloader_idx)

    def on_test_epoch_end(self) -> None:
        self._eval_end("test")

    def _param_groups(self) -> list[dict[str, Any]]:
        """The model's ``param_groups()`` where it has them (dicts with ``params`` and an ``lr_scale`` factor that
        :meth:`configure_optimizers` applies to the optimizer's learning rate), else one group of all trainable
        parameters."""
        if hasattr(self.model, "param_groups"):
            return [g for g in self.model.param_groups() if g["params"]]
        return [{"params": [p for p in self.model.parameters() if p.requires_grad]}]

    # ---- data bookkeeping ----

    def _train_datasets(self) -> Iterator[Any]:
        loaders = self.trainer.train_dataloader
        if loaders is None:
            return
        for loader in loaders if isinstance(loaders, list | tuple) else [loaders]:
            yield loader.dataset

    def on_train_epoch_start(self) -> None:
        for ds in self._train_datasets():  # streaming datasets reshuffle per epoch
            if hasattr(ds, "set_epoch"):
                ds.set_epoch(self.current_epoch)

    def on_train_epoch_end(self) -> None:
        if self.nonfinite_loss == "skip":
            self.log("train/nonfinite_skipped", float(self._nonfinite_skipped))
            self._nonfinite_skipped = 0
        skipped = sum(ds.pop_skipped() for ds in self._train_datasets() if hasattr(ds, "pop_skipped"))
        self.log("data/skipped", float(skipped), reduce_fx="sum", sync_dist=True)

    @property
    def plot_dir(self) -> Path:
        path = Path(self.trainer.default_root_dir) / "plots"
        path.mkdir(parents=True, exist_ok=True)
        return path

    # ---- checkpoints ----

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Every checkpoint carries the run config; a full one also the RNG states.

        A weights-only save (``ModelCheckpoint(save_weights_only=True)``: ``checkpoints/best.ckpt``)
        has no ``optimizer_states``. It keeps the weights, the config, epoch and step, and drops
        what only a resume reads (loop progress, the datamodule's position, RNG states). Lightning
        calls no callback's ``on_save_checkpoint`` for such a save, so the EMA average
        (``callbacks=ema``) is put into its ``state_dict`` here, as a full save gets it.
        """
        checkpoint["objmtl"] = {"version": objmtl.__version__, "config": self.run_config}
        if "optimizer_states" in checkpoint:
            checkpoint["rng_states"] = _collect_rng()
            return
        checkpoint.pop("loops", None)
        trainer = self._trainer
        if trainer is None:
            return
        if trainer.datamodule is not None:
            checkpoint.pop(type(trainer.datamodule).__qualname__, None)
        for callback in trainer.callbacks:  # type: ignore[attr-defined]
            if isinstance(callback, WeightAveraging) and getattr(callback, "_average_model", None) is not None:
                callback.on_save_checkpoint(trainer, self, checkpoint)  # state_dict := the average
                checkpoint.pop("current_model_state", None)  # the raw weights: only a resume needs them
                checkpoint.pop("averaging_state", None)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if (self._trainer is not None and self.trainer.state.fn == TrainerFn.FITTING
                and "optimizer_states" not in checkpoint):
            raise UserError(f"{self.trainer.ckpt_path}: holds weights only (no optimizer, schedule or loop state; "
                            "checkpoints/best.ckpt is such a file), so training cannot continue from it: "
                            "resume=RUN_DIR or ckpt_path=RUN_DIR/checkpoints/last.ckpt continues a run, "
                            "load_from=CKPT starts a new one from its weights")
        if "rng_states" in checkpoint and self._trainer is not None and self.trainer.training:
            _restore_rng(checkpoint["rng_states"])
