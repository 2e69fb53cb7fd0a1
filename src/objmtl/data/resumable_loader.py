"""``ResumableLoader``: the training DataLoader that continues an epoch where a checkpoint left it.

A streaming loader restarted in the middle of an epoch would replay the epoch from its start: the
steps and epochs would count right but the model would see the first batches twice and the last
ones never. :class:`~objmtl.data.datamodule.ShardDataModule` saves, with every checkpoint written
inside an epoch, how many training batches of that epoch are done; on resume it sets the epoch on
the dataset and asks this loader to pass over that many batches once. Passing over decodes and
transforms them (the per-worker augmentation generators advance exactly as in the first run, so a
deterministic run continues with the very batches it would have trained on) but runs no model.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from torch.utils.data import DataLoader
from tqdm import tqdm

__all__ = ["ResumableLoader"]

log = logging.getLogger(__name__)


class ResumableLoader(DataLoader):
    """A DataLoader whose next iteration can start ``n`` batches in (:meth:`skip_once`).

    ``state_dict`` / ``load_state_dict`` make Lightning treat it as resumable; the position itself
    travels in the datamodule's state, which knows how many batches the trainer finished.
    """

    _skip = 0

    def skip_once(self, batches: int) -> None:
        """The next ``iter()`` passes over its first ``batches`` batches."""
        self._skip = max(0, int(batches))

    def __iter__(self) -> Iterator[Any]:
        iterator = super().__iter__()
        skip, self._skip = self._skip, 0
        if skip:
            log.info("resuming inside an epoch: passing over the %d batches already trained on", skip)
            for _ in tqdm(range(skip), desc="resume: batches already done", leave=False, disable=skip < 20):
                next(iterator)
        return iterator

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        del state_dict
