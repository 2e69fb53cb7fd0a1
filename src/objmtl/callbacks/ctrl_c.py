"""Ctrl-C between steps: the first SIGINT is kept until the current batch is done, a second one acts at once.

Python raises ``KeyboardInterrupt`` wherever the main thread happens to be: inside a queue's lock, a
pin-memory hand-over or a checkpoint write. A run interrupted there can hang at tear-down (its loader
shutdown waiting on a lock nobody will release: the likely cause, not proven, of a Ctrl-C test whose process
did not exit within 180 s in one full-suite run). This callback turns the
first SIGINT into a flag and raises ``KeyboardInterrupt`` itself at the next batch boundary, from plain
Python code, where Lightning's own Ctrl-C handling (tear-down, then ``sys.exit``) takes over as before.

Only for one process: with several, each would stop at its own batch and leave the others waiting in a
collective, so there the signal keeps Python's default behaviour.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

import lightning as L

__all__ = ["InterruptBetweenSteps"]


class InterruptBetweenSteps(L.Callback):
    def __init__(self) -> None:
        self._requested = False
        self._previous: Any = None

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        if self._requested:  # the second Ctrl-C: do not wait any more
            raise KeyboardInterrupt
        self._requested = True

    def _install(self, trainer: L.Trainer) -> None:
        if trainer.world_size > 1 or threading.current_thread() is not threading.main_thread():
            return
        if self._previous is None:
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)

    def _check(self) -> None:
        if self._requested:
            self._restore()
            raise KeyboardInterrupt

    def _restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._install(trainer)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore()

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        self._check()

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self._check()

    def on_validation_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self._check()

    def on_test_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self._check()

    def on_predict_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self._check()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check()
