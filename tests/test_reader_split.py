"""The streaming reader deals each sample to exactly one (rank, worker) per epoch."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from torch.utils.data import DataLoader

from objmtl.data.shard_reader import ShardDataset


def _keys(ds: ShardDataset, workers: int, batch_size: int, drop_last: bool = False) -> list[str]:
    loader = DataLoader(ds, batch_size=batch_size, num_workers=workers, drop_last=drop_last,
                        collate_fn=lambda b: [s["key"] for s in b])
    batches = list(loader)
    assert len(batches) == len(loader), "the loader's length must be exact"
    return [k for b in batches for k in b]


def _all_keys(root: Path) -> list[str]:
    return [s["key"] for s in ShardDataset(root=root, split="train")]


@pytest.mark.parametrize("shuffle", [False, True])
def test_two_ranks_two_workers_read_every_sample_once(synth_root: Path, shuffle: bool) -> None:
    everything = _all_keys(synth_root)
    assert len(everything) == 84 and len(set(everything)) == 84
    seen: Counter[str] = Counter()
    for rank in range(2):
        ds = ShardDataset(root=synth_root, split="train", world_size=2, rank=rank, batch_size=5,
                          shuffle=shuffle, shuffle_buffer=16)
        keys = _keys(ds, workers=2, batch_size=5)
        assert len(keys) == len(ds) == 42
        seen.update(keys)
    assert set(seen) == set(everything) and max(seen.values()) == 1


def test_training_epochs_are_equal_across_ranks_and_reshuffled(synth_root: Path) -> None:
    per_epoch = []
    for epoch in range(2):
        seen: Counter[str] = Counter()
        lengths = []
        for rank in range(2):
            ds = ShardDataset(root=synth_root, split="train", world_size=2, rank=rank, batch_size=8,
                              shuffle=True, shuffle_buffer=16, drop_last=True, seed=3)
            ds.set_epoch(epoch)
            keys = _keys(ds, workers=2, batch_size=8, drop_last=True)
            lengths.append(len(keys))
            seen.update(keys)
        assert lengths == [40, 40]  # 84 // 2 = 42 per rank, 5 whole batches of 8
        assert max(seen.values()) == 1
        per_epoch.append(list(seen))
    assert per_epoch[0] != per_epoch[1]
    assert set(per_epoch[0]) != set(per_epoch[1]), "the dropped remainder should change per epoch"


def test_same_seed_and_epoch_give_the_same_order(synth_root: Path) -> None:
    def order(epoch: int) -> list[str]:
        ds = ShardDataset(root=synth_root, split="train", shuffle=True, shuffle_buffer=10, seed=1)
        ds.set_epoch(epoch)
        return [s["key"] for s in ds]

    assert order(0) == order(0)
    assert order(0) != order(1)
    assert sorted(order(1)) == sorted(order(0))


def test_fixed_length_epochs_by_resampling(synth_root: Path) -> None:
    counts = []
    for rank in range(2):
        ds = ShardDataset(root=synth_root, split="train", world_size=2, rank=rank, batch_size=4,
                          samples_per_epoch=200, shuffle=True, drop_last=True)
        keys = _keys(ds, workers=2, batch_size=4, drop_last=True)
        counts.append(len(keys))
    assert counts == [100, 100]
