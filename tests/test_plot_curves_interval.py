"""PlotCurves redraws after a validation only when min_interval_s have passed; the end of fitting always draws."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from lightning.pytorch.loggers import CSVLogger

from objmtl.viz.callbacks import PlotCurves


def _trainer(tmp_path: Path) -> SimpleNamespace:
    logger = CSVLogger(tmp_path, name="csv", version="")
    logger.log_metrics({"train/loss": 1.0}, step=0)
    logger.log_metrics({"train/loss": 0.5}, step=1)
    return SimpleNamespace(is_global_zero=True, sanity_checking=False, loggers=[logger],
                           default_root_dir=str(tmp_path))


def test_validation_waits_for_the_interval_and_fit_end_always_draws(tmp_path: Path) -> None:
    trainer, png = _trainer(tmp_path), tmp_path / "plots" / "curves.png"
    slow = PlotCurves(min_interval_s=3600)
    slow.on_validation_end(trainer, None)
    assert not png.exists()
    slow.on_fit_end(trainer, None)
    assert png.is_file()
    png.unlink()
    eager = PlotCurves(min_interval_s=0)
    eager.on_validation_end(trainer, None)
    assert png.is_file()
