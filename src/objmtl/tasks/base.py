"""What every task shares: optimizer and schedule from config, checkpoints that rebuild themselves."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn
from torch.optim import Optimizer

import objmtl

__all__ = ["BaseTask"]

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
    """

    def __init__(self, *, model: nn.Module, optimizer: OptimizerFactory | None = None,
                 scheduler: SchedulerFactory | None = None, run_config: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.model = model
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.run_config = run_config or {}

    # ---- optimisation ----

    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            raise ValueError("no optimizer configured")
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = self.optimizer_factory(params)
        if self.scheduler_factory is None:
            return optimizer
        total = int(self.trainer.estimated_stepping_batches)
        epochs = self.trainer.max_epochs if self.trainer.max_epochs and self.trainer.max_epochs > 0 else 1
        per_epoch = max(1, math.ceil(total / epochs))
        scheduler = self.scheduler_factory(optimizer, total_steps=total, steps_per_epoch=per_epoch)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

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
        skipped = sum(ds.pop_skipped() for ds in self._train_datasets() if hasattr(ds, "pop_skipped"))
        self.log("data/skipped", float(skipped), reduce_fx="sum", sync_dist=True)

    @property
    def plot_dir(self) -> Path:
        path = Path(self.trainer.default_root_dir) / "plots"
        path.mkdir(parents=True, exist_ok=True)
        return path

    # ---- checkpoints ----

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["objmtl"] = {"version": objmtl.__version__, "config": self.run_config}
        checkpoint["rng_states"] = _collect_rng()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "rng_states" in checkpoint and self._trainer is not None and self.trainer.training:
            _restore_rng(checkpoint["rng_states"])
