"""Lightning callbacks that draw."""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L

from objmtl.viz.plots import plot_curves

__all__ = ["PlotCurves"]


class PlotCurves(L.Callback):
    """Redraws ``plots/<filename>`` from the CSV logger's file after validations and at the end of fitting.

    A drawing of many panels takes seconds on a CPU (2.4 s for task=det's 16 on 2 cores), so after a
    validation it is redrawn only when ``min_interval_s`` have passed since the last drawing; the end of
    fitting always draws.
    """

    def __init__(self, *, filename: str = "curves.png", min_interval_s: float = 60.0) -> None:
        self.filename = filename
        self.min_interval_s = min_interval_s
        self._last = time.monotonic()  # not at start-up: the first validation has little to draw

    def _draw(self, trainer: L.Trainer, *, force: bool = False) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        if not force and time.monotonic() - self._last < self.min_interval_s:
            return
        self._last = time.monotonic()
        for logger in trainer.loggers:
            if isinstance(logger, L.pytorch.loggers.CSVLogger):
                logger.save()
                csv = Path(logger.log_dir) / "metrics.csv"
                if csv.is_file():
                    plot_curves(csv, Path(trainer.default_root_dir) / "plots" / self.filename)
                return

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._draw(trainer)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._draw(trainer, force=True)
