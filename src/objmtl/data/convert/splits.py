"""Which split each source image lands in: split files, split folders, or a seeded ratio."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np

from objmtl.data.schema import SPLITS
from objmtl.errors import UserError

__all__ = ["read_split_file", "split_by_ratio"]

K = TypeVar("K", bound=Hashable)


def split_by_ratio(keys: Sequence[K], *, val_fraction: float, test_fraction: float = 0.0, seed: int = 0,
                   groups: Sequence[Hashable] | None = None) -> dict[K, str]:
    """Assigns ``round(n * fraction)`` keys to val and test, the rest to train, reproducibly.

    With ``groups`` (e.g. class labels) the split is stratified: each group is cut on its own.
    """
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise UserError(f"--val-fraction {val_fraction} and --test-fraction {test_fraction}: "
                        "each in [0, 1) and together below 1")
    rng = np.random.default_rng(seed)
    by_group: dict[Hashable, list[K]] = {}
    for i, key in enumerate(keys):
        by_group.setdefault(groups[i] if groups is not None else 0, []).append(key)
    out: dict[K, str] = {}
    for group in sorted(by_group, key=str):
        members = sorted(by_group[group], key=str)
        order = rng.permutation(len(members))
        n_test = int(round(len(members) * test_fraction))
        n_val = int(round(len(members) * val_fraction))
        for rank, i in enumerate(order):
            out[members[i]] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return out


def read_split_file(path: str | Path) -> list[str]:
    """Non-empty lines of a split file (first whitespace-separated field: an image path or stem)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such split file")
    return [line.split()[0] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def check_split(name: str) -> str:
    if name not in SPLITS:
        raise UserError(f"split {name!r} is not one of {', '.join(SPLITS)}")
    return name
