"""Reproducible augmentation: each worker and epoch reseeds its sample adapter's pipeline."""

from __future__ import annotations

from typing import Any

__all__ = ["ReseedsTransform"]


class ReseedsTransform:
    """Mixin of the sample adapters: ``reseed(seed)`` seeds their albumentations ``transform``
    (:class:`~objmtl.data.shard_reader.ShardDataset` calls it per worker and epoch)."""

    transform: Any

    def reseed(self, seed: int) -> None:
        if hasattr(self.transform, "set_random_seed"):
            self.transform.set_random_seed(seed)
