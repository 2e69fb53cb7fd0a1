"""Lightning's console output, once and without advertisements."""

from __future__ import annotations

import logging
import warnings

__all__ = ["quiet_lightning"]


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.msg)  # ads, and the Ctrl-C notice (objmtl.runs.interrupted says where the run stopped)
        return "Tip:" not in text and "Detected KeyboardInterrupt" not in text


def quiet_lightning() -> None:
    """Lightning's records go through the root logger once (Hydra's console and file), minus ads."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if isinstance(handler, logging.StreamHandler) and logging.getLogger().handlers:
                logger.removeHandler(handler)
    # our streaming datasets define __len__ per rank and deal whole batches to workers, so it is exact
    warnings.filterwarnings("ignore", message=r"Your `IterableDataset` has `__len__` defined")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropTips) for f in rank_zero.filters):
        rank_zero.addFilter(_DropTips())
