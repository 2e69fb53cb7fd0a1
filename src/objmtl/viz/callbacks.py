"""Lightning callbacks that draw."""

from __future__ import annotations

from pathlib import Path

import lightning as L

from objmtl.viz.plots import plot_curves

__all__ = ["PlotCurves"]


class PlotCurves(L.Callback):
    """Redraws ``plots/<filename>`` from the CSV logger's file after every validation and at the end."""

    def __init__(self, *, filename: str = "curves.png") -> None:
        self.filename = filename

    def _draw(self, trainer: L.Trainer) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
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
        self._draw(trainer)
