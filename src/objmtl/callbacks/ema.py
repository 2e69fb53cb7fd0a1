"""``EMAWeightAveraging``: Lightning's, except that a checkpoint loaded to test or validate is left as it is.

Lightning's callback, given a checkpoint outside ``fit`` while it still holds an average (``trainer.test``
right after ``trainer.fit``: ``test_after_fit``), loads the raw weights (``current_model_state``) into
the model, so the test would score the raw weights rather than the average; and it warns about a
weights-only ``best.ckpt`` that has no ``current_model_state``. Here only ``fit`` restores the
averaging state: testing and validating use the checkpoint's ``state_dict``, which holds the average
(in full and in weights-only checkpoints), as ``objmtl-test`` and ``objmtl-export`` do.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import EMAWeightAveraging as _LightningEMA
from lightning.pytorch.trainer.states import TrainerFn

__all__ = ["EMAWeightAveraging"]


class EMAWeightAveraging(_LightningEMA):
    """An exponential moving average of the weights (the arguments are Lightning's ``EMAWeightAveraging``'s)."""

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)
