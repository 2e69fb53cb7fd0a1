"""``Throughput``: samples per second and the share of time spent waiting for data, per training epoch.

A slow loader shows as a high ``perf/data_wait`` (the step waits for the next batch); a slow model as a
low one. Only the training batches are timed: validation inside the epoch is left out of both.
"""

from __future__ import annotations

import time
from typing import Any

import lightning as L
from torch import Tensor

__all__ = ["Throughput", "batch_length"]


def batch_length(batch: Any) -> int:
    """Samples in a batch: the leading size of its images (``images``, ``image``, ``crops``) or first tensor."""
    if isinstance(batch, Tensor):
        return int(batch.shape[0])
    if isinstance(batch, dict):
        for key in ("images", "image", "crops"):
            if isinstance(batch.get(key), Tensor):
                return int(batch[key].shape[0])
        for value in batch.values():
            if isinstance(value, Tensor) and value.ndim:
                return int(value.shape[0])
            if isinstance(value, list | tuple):
                return len(value)
    if isinstance(batch, list | tuple) and batch:
        return batch_length(batch[0])
    return 0


class Throughput(L.Callback):
    """Logs ``perf/samples_per_sec`` (all ranks together) and ``perf/data_wait`` (0..1) at each epoch end.

    Args:
        prefix: Prefix of the logged names.
    """

    def __init__(self, *, prefix: str = "perf") -> None:
        self.prefix = prefix
        self._reset()

    def _reset(self) -> None:
        self._last_end: float | None = None
        self._wait = self._compute = 0.0
        self._samples = 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._reset()
        self._last_end = time.perf_counter()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        now = time.perf_counter()
        if self._last_end is not None:
            self._wait += now - self._last_end
        self._start = now

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._last_end = time.perf_counter()
        self._compute += self._last_end - self._start
        self._samples += batch_length(batch)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking and self._last_end is not None:
            self._last_end = time.perf_counter()  # validation time is not data waiting

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        elapsed = self._wait + self._compute
        if not self._samples or elapsed <= 0:
            return
        pl_module.log(f"{self.prefix}/samples_per_sec", self._samples * trainer.world_size / elapsed,
                      sync_dist=True)
        pl_module.log(f"{self.prefix}/data_wait", self._wait / elapsed, sync_dist=True)
