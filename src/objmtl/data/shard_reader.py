"""Streams samples from a shard set, split over DDP ranks and dataloader workers.

Why not ``webdataset.split_by_node`` / ``split_by_worker``: they deal out whole shards, so with
fewer shards than consumers some read nothing, and ranks get unequal counts, which hangs DDP
(webdataset #250). Here the per-shard counts in ``meta.json`` define one sequence of samples;
each epoch it is reordered (shard order and a rotation, from ``seed`` and the epoch), cut into one
contiguous range per rank (equal sizes), and each rank's range into whole batches per worker.
A consumer opens only the shards its range touches and skips the samples before its start, so
no sample is read twice in an epoch and memory never depends on the data set's size.
"""

from __future__ import annotations

import io
import json
import logging
import math
import multiprocessing as mp
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch.distributed as dist
import webdataset as wds
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info

from objmtl.data.schema import SPLITS, read_meta
from objmtl.data.tar_members import iter_members
from objmtl.errors import UserError

__all__ = ["ShardDataset", "decode_sample", "iter_shard", "sample_image_id"]

log = logging.getLogger(__name__)

IMAGE_EXTS = ("jpg", "jpeg", "png")


@dataclass(frozen=True)
class _Segment:
    url: str
    start: int  # first sample index inside the shard
    stop: int


def iter_shard(url: str, start: int = 0, stop: int | None = None) -> Iterator[dict[str, Any]]:
    """Yields raw samples ``{"__key__", "__url__", ext: bytes}`` with index in [start, stop).

    Members of samples before ``start`` are skipped without being read (seeked over where the
    stream allows). A tar that can't be read is a :class:`UserError` naming the shard.
    """
    state = {"index": -1, "key": None}

    def want(name: str) -> bool:
        k = name.rsplit("/", 1)[-1].partition(".")[0]
        if k != state["key"]:
            state["key"], state["index"] = k, state["index"] + 1
        return state["index"] >= start and (stop is None or state["index"] < stop)

    current: dict[str, Any] | None = None
    try:
        with wds.gopen(url, "rb") as stream:
            for name, data in iter_members(stream, want):
                if stop is not None and state["index"] >= stop:
                    break
                k, _, ext = name.rsplit("/", 1)[-1].partition(".")
                if current is not None and current["__key__"] != k:
                    yield current
                    current = None
                if data is not None:
                    if current is None:
                        current = {"__key__": k, "__url__": url}
                    current[ext.lower()] = data
    except (ValueError, EOFError, UnicodeDecodeError) as e:
        raise UserError(f"{url}: unreadable shard ({e})") from None
    if current is not None:
        yield current


def sample_image_id(sample: dict[str, Any]) -> int:
    """A decoded sample's COCO image id: ``ann["image_id"]``, else its key if numeric, else -1."""
    image_id = sample["ann"].get("image_id")
    if image_id is not None:
        return int(image_id)
    key = str(sample.get("key", ""))
    return int(key) if key.isdigit() else -1


def decode_sample(raw: dict[str, Any]) -> dict[str, Any]:
    """Raw tar members -> ``{"key", "image" (HxWx3 uint8 RGB), "ann" (dict), "mask" (HxW uint8 | None)}``.

    Raises ValueError (or an OSError from Pillow) when a member is missing or can't be decoded.
    """
    ext = next((e for e in IMAGE_EXTS if e in raw), None)
    if ext is None:
        raise ValueError("no image member (.jpg or .png)")
    with Image.open(io.BytesIO(raw[ext])) as im:
        image = np.asarray(im.convert("RGB"))
    ann = json.loads(raw["json"]) if "json" in raw else {}
    if not isinstance(ann, dict):
        raise ValueError("annotation json is not an object")
    mask = None
    if "mask.png" in raw:
        with Image.open(io.BytesIO(raw["mask.png"])) as m:
            mask = np.asarray(m.convert("L") if m.mode not in ("L", "P") else m)
        if mask.shape != image.shape[:2]:
            raise ValueError(f"mask {mask.shape} and image {image.shape[:2]} differ in size")
    return {"key": raw["__key__"], "image": image, "ann": ann, "mask": mask}


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def _split_evenly(total: int, parts: int, i: int) -> tuple[int, int]:
    """Range of part i when ``total`` items are cut into ``parts`` near-equal contiguous parts."""
    base, extra = divmod(total, parts)
    start = i * base + min(i, extra)
    return start, start + base + (1 if i < extra else 0)


class ShardDataset(IterableDataset):
    """One split of a shard set as a stream of decoded (and optionally transformed) samples.

    Args:
        root: shard set folder holding ``meta.json``.
        split: ``train``, ``val`` or ``test``.
        transform: applied to each decoded sample (see :func:`decode_sample`) in the worker.
        shuffle: reorder shards and rotate the sequence each epoch, and use a shuffle buffer.
        shuffle_buffer: samples held for shuffling (raw bytes, not decoded images).
        batch_size: the unit in which ranges are dealt to workers, so that only the last
            worker of a rank yields a partial batch.
        drop_last: every rank yields the same whole number of batches (for training under DDP).
        samples_per_epoch: when set, each epoch draws this many samples (over all ranks) by
            picking shards at random with replacement: fixed-length epochs by resampling.
        on_decode_error: ``warn`` (skip, warn and count) or ``raise``. When shuffling (training), a
            skipped sample's slot is filled by the previous good one, so the epoch keeps its planned
            length (a short epoch would make Lightning skip that epoch's validation).
        world_size, rank: override what ``torch.distributed`` says (for tests and tools).
    """

    def __init__(self, *, root: str | Path, split: str, transform: Callable[[dict], Any] | None = None,
                 shuffle: bool = False, shuffle_buffer: int = 1000, seed: int = 0, batch_size: int = 1,
                 drop_last: bool = False, samples_per_epoch: int | None = None,
                 on_decode_error: str = "warn", world_size: int | None = None,
                 rank: int | None = None) -> None:
        super().__init__()
        if split not in SPLITS:
            raise UserError(f"split {split!r} is not one of {', '.join(SPLITS)}")
        if on_decode_error not in ("warn", "raise"):
            raise UserError(f"on_decode_error={on_decode_error!r}: use warn or raise")
        self.root = str(root)
        self.meta = read_meta(root)
        shards = self.meta.splits.get(split, [])
        if not shards or self.meta.count(split) == 0:
            raise UserError(f"{Path(root) / split}: split {split!r} has no samples in meta.json")
        self.split = split
        self.shards = [(self._url(split, s.file), s.count) for s in shards]
        for url, _ in self.shards:
            if "://" not in url and not url.startswith("pipe:") and not Path(url).is_file():
                raise UserError(f"{url}: shard listed in meta.json is missing")
        self.transform = transform
        self.shuffle, self.shuffle_buffer, self.seed = shuffle, shuffle_buffer, seed
        self.batch_size, self.drop_last = max(1, batch_size), drop_last
        self.samples_per_epoch = samples_per_epoch
        self.on_decode_error = on_decode_error
        self._world_override = (world_size, rank) if world_size is not None else None
        self.epoch = 0
        self._skipped = mp.Value("i", 0)

    def _url(self, split: str, file: str) -> str:
        return f"{self.root.rstrip('/')}/{split}/{file}"

    @property
    def total(self) -> int:
        return sum(c for _, c in self.shards)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def pop_skipped(self) -> int:
        """Samples skipped for decode errors since the last call (summed over workers)."""
        with self._skipped.get_lock():
            n, self._skipped.value = self._skipped.value, 0
        return n

    def _world(self) -> tuple[int, int]:
        return self._world_override if self._world_override else _world()

    def _rank_count(self, world: int, rank: int) -> int:
        """Samples this rank yields per epoch (before decode failures)."""
        if self.samples_per_epoch is not None:
            n = self.samples_per_epoch // world
        elif self.drop_last:
            n = self.total // world
        else:
            start, stop = _split_evenly(self.total, world, rank)
            n = stop - start
        return (n // self.batch_size) * self.batch_size if self.drop_last else n

    def __len__(self) -> int:
        return self._rank_count(*self._world())

    # ---- the plan: which samples this (rank, worker) reads in this epoch ----

    def _order(self) -> tuple[list[tuple[str, int]], int]:
        if not self.shuffle:
            return list(self.shards), 0
        rng = np.random.default_rng([self.seed, self.epoch])
        perm = rng.permutation(len(self.shards))
        return [self.shards[i] for i in perm], int(rng.integers(self.total))

    def plan(self, *, rank: int, world: int, worker: int, num_workers: int) -> list[_Segment]:
        """The shard segments one consumer reads this epoch (not used with samples_per_epoch)."""
        order, offset = self._order()
        total = self.total
        if self.drop_last:
            per = total // world
            rank_start, rank_n = rank * per, self._rank_count(world, rank)
        else:
            rank_start, rank_stop = _split_evenly(total, world, rank)
            rank_n = rank_stop - rank_start
        n_batches = math.ceil(rank_n / self.batch_size)
        b0, b1 = _split_evenly(n_batches, num_workers, worker)
        lo, hi = rank_start + b0 * self.batch_size, rank_start + min(b1 * self.batch_size, rank_n)
        # positions are rotated by offset over the concatenated shards: [lo, hi) may wrap once
        segments: list[_Segment] = []
        for a, b in self._unrotate(lo, hi, offset, total):
            segments += self._cut(order, a, b)
        return segments

    @staticmethod
    def _unrotate(lo: int, hi: int, offset: int, total: int) -> list[tuple[int, int]]:
        if hi <= lo:
            return []
        a, b = (lo + offset) % total, (hi - 1 + offset) % total + 1
        return [(a, b)] if a < b else [(a, total), (0, b)]

    @staticmethod
    def _cut(order: list[tuple[str, int]], a: int, b: int) -> list[_Segment]:
        out, pos = [], 0
        for url, count in order:
            s, e = max(a, pos), min(b, pos + count)
            if s < e:
                out.append(_Segment(url, s - pos, e - pos))
            pos += count
        return out

    # ---- iteration ----

    def _raw_stream(self, rank: int, world: int, worker: int, num_workers: int) -> Iterator[dict]:
        if self.samples_per_epoch is None:
            for seg in self.plan(rank=rank, world=world, worker=worker, num_workers=num_workers):
                yield from iter_shard(seg.url, seg.start, seg.stop)
            return
        quota_rank = self._rank_count(world, rank)
        b0, b1 = _split_evenly(math.ceil(quota_rank / self.batch_size), num_workers, worker)
        quota = min(b1 * self.batch_size, quota_rank) - b0 * self.batch_size
        rng = np.random.default_rng([self.seed, self.epoch, rank, worker, 1])
        while quota > 0:
            url, _ = self.shards[int(rng.integers(len(self.shards)))]
            for raw in iter_shard(url):
                yield raw
                quota -= 1
                if quota == 0:
                    return

    def _shuffled(self, stream: Iterator[dict], rng: np.random.Generator) -> Iterator[dict]:
        """A shuffle buffer that starts yielding after a few samples and grows to ``shuffle_buffer``."""
        if not self.shuffle or self.shuffle_buffer <= 1:
            yield from stream
            return
        buf: list[dict] = []
        for seen, item in enumerate(stream, 1):
            buf.append(item)
            if len(buf) >= min(self.shuffle_buffer, 64 + seen // 2):
                i = int(rng.integers(len(buf)))
                buf[i], buf[-1] = buf[-1], buf[i]
                yield buf.pop()
        rng.shuffle(buf)
        yield from buf

    def __iter__(self) -> Iterator[Any]:
        world, rank = self._world()
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info else (0, 1)
        rng = np.random.default_rng([self.seed, self.epoch, rank, worker])
        if hasattr(self.transform, "reseed"):  # distinct, reproducible augmentations per worker and epoch
            self.transform.reseed(int(rng.integers(2**31)))
        owed, last = 0, None  # training: skipped samples are replaced, so every epoch keeps its planned length
        for raw in self._shuffled(self._raw_stream(rank, world, worker, num_workers), rng):
            try:
                sample = decode_sample(raw)
            except (OSError, ValueError, Image.DecompressionBombError) as e:
                where = f"{raw['__url__']}: sample {raw['__key__']}"
                if self.on_decode_error == "raise":
                    raise UserError(f"{where}: cannot decode ({e})") from None
                log.warning("%s: skipped, cannot decode (%s)", where, e)
                with self._skipped.get_lock():
                    self._skipped.value += 1
                if self.shuffle and last is not None:
                    yield self.transform(last) if self.transform else last
                elif self.shuffle:
                    owed += 1
                continue
            last = sample
            for _ in range(owed + 1):
                yield self.transform(sample) if self.transform else sample
            owed = 0

