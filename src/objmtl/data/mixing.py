"""Several shard sets in one run: one label space, and concat / weighted / balanced / repeat-factor draws.

Sources whose class lists differ are merged into one label space: the first source's classes in
order, then each new name as it first appears. Every sample's ``label``, ``classes`` and mask ids
are mapped into it on the fly; the mapping is recorded with the run (``label_space`` in its
config and checkpoints).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from objmtl.data.schema import IGNORE_INDEX, Meta
from objmtl.data.shard_reader import ShardDataset, _split_evenly, iter_shard
from objmtl.errors import UserError

__all__ = ["MIX_MODES", "MixedDataset", "merge_metas", "repeat_factors"]

MIX_MODES = ("concat", "weighted", "balanced", "repeat_factor")


def _merge_names(lists: Sequence[Sequence[str]]) -> tuple[list[str], list[list[int]]]:
    merged: list[str] = []
    index: dict[str, int] = {}
    maps = []
    for names in lists:
        m = []
        for name in names:
            if name not in index:
                index[name] = len(merged)
                merged.append(name)
            m.append(index[name])
        maps.append(m)
    return merged, maps


def merge_metas(metas: Sequence[Meta]) -> tuple[Meta, list[dict[str, list[int]]]]:
    """One Meta over several sources, and per source the maps of its class and mask ids."""
    classes, class_maps = _merge_names([m.classes for m in metas])
    mask_classes, mask_maps = _merge_names([m.mask_classes for m in metas if m.mask_classes] or [[]])
    kps = {tuple(m.keypoints.names) for m in metas if m.keypoints}
    if len(kps) > 1:
        raise UserError(f"data.sources: keypoint sets differ between sources ({sorted(kps)}); they can't mix")
    mask_iter = iter(mask_maps)
    maps = [{"classes": cm, "mask_classes": next(mask_iter) if m.mask_classes else []}
            for m, cm in zip(metas, class_maps, strict=True)]
    order = ("cls", "det", "seg", "pose")  # the built-in kinds first, in this order; any other after them, by name
    tasks = sorted({t for m in metas for t in m.tasks}, key=lambda t: (order.index(t) if t in order else len(order), t))
    keypoints = next((m.keypoints for m in metas if m.keypoints), None)
    meta = replace(metas[0], classes=classes, mask_classes=mask_classes, tasks=tasks, keypoints=keypoints,
                   splits={}, source="+".join(m.source for m in metas),
                   class_ids=metas[0].class_ids if len(metas) == 1 else [])  # mixed sources: no one id space
    return meta, maps


def _remap(sample: dict[str, Any], maps: dict[str, list[int]]) -> dict[str, Any]:
    ann = dict(sample["ann"])
    cm = maps["classes"]
    if ann.get("label") is not None:
        ann["label"] = cm[int(ann["label"])]
    if "classes" in ann:
        ann["classes"] = [cm[int(c)] for c in ann["classes"]]
    out = {**sample, "ann": ann}
    if sample.get("mask") is not None and maps["mask_classes"]:
        lut = np.full(256, IGNORE_INDEX, np.uint8)
        lut[: len(maps["mask_classes"])] = maps["mask_classes"]
        out["mask"] = lut[sample["mask"]]
    return out


def repeat_factors(ds: ShardDataset, *, threshold: float) -> dict[str, float]:
    """LVIS repeat factors per sample key: ``max(1, sqrt(threshold / f(c)))`` over its classes.

    ``f(c)`` is the fraction of images holding class ``c`` (instances, or the image label).
    Reads only the JSON members, once.
    """
    import json

    per_key: dict[str, set[int]] = {}
    for url, _ in ds.shards:
        for raw in iter_shard(url):
            ann = json.loads(raw.get("json", b"{}"))
            cls = set(ann.get("classes", []))
            if ann.get("label") is not None:
                cls.add(int(ann["label"]))
            per_key[raw["__key__"]] = cls  # keys are unique within a split
    freq: Counter[int] = Counter(c for cls in per_key.values() for c in cls)
    n = max(len(per_key), 1)
    return {k: max([1.0] + [math.sqrt(threshold / (freq[c] / n)) for c in cls]) for k, cls in per_key.items()}


class MixedDataset(IterableDataset):
    """Draws from several :class:`ShardDataset` sources into one label space.

    Modes: ``concat`` (every source once per epoch, one after the other); ``weighted`` (each draw
    picks source i with probability ``weights[i]``); ``balanced`` (equal probability per source);
    ``repeat_factor`` (concat, with each image repeated by its LVIS repeat factor, stochastically
    rounded). The drawing modes need ``samples_per_epoch`` (default: the sources' total).
    """

    def __init__(self, *, sources: Sequence[ShardDataset], maps: Sequence[dict[str, list[int]]],
                 mode: str = "concat", weights: Sequence[float] | None = None,
                 samples_per_epoch: int | None = None, repeat_threshold: float = 0.001,
                 transform: Any = None, seed: int = 0, batch_size: int = 1,
                 kinds: Sequence[Sequence[str] | None] | None = None) -> None:
        super().__init__()
        # per source, the annotation kinds it lends to a multi-task run (None: all it has)
        self.kinds = [list(k) if k is not None else None for k in kinds] if kinds else [None] * len(sources)
        if mode not in MIX_MODES:
            raise UserError(f"data.mix={mode!r}: use one of {', '.join(MIX_MODES)}")
        self.sources, self.maps, self.mode = list(sources), list(maps), mode
        if mode == "balanced":
            weights = [1.0] * len(self.sources)
        if mode == "weighted" and (weights is None or len(weights) != len(self.sources)):
            raise UserError(f"data.mix=weighted needs one weight per source ({len(self.sources)})")
        total = float(sum(weights)) if weights else 0.0
        if weights is not None and (total <= 0 or any(w < 0 for w in weights)):
            raise UserError(f"data.sources weights {list(weights)}: need non-negative numbers with a positive sum")
        self.weights = [w / total for w in weights] if weights else None
        self.samples_per_epoch = samples_per_epoch or sum(s.total for s in self.sources)
        self.repeat_threshold = repeat_threshold
        self._factors: list[dict[str, float]] | None = None
        self.transform, self.seed, self.batch_size = transform, seed, max(1, batch_size)
        self.epoch = 0
        for s in self.sources:
            s.transform = None  # this dataset remaps first, then transforms

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        for s in self.sources:
            s.set_epoch(epoch)

    def pop_skipped(self) -> int:
        return sum(s.pop_skipped() for s in self.sources)

    def __len__(self) -> int:
        if self.mode == "concat":
            return sum(len(s) for s in self.sources)
        world, _ = self.sources[0]._world()
        n = self.samples_per_epoch // world
        return (n // self.batch_size) * self.batch_size if self.sources[0].drop_last else n

    def _endless(self, i: int) -> Iterator[dict[str, Any]]:
        """Source i over and over, reshuffled each pass; stops if a pass yields nothing."""
        src, passes = self.sources[i], 0
        while True:
            src.set_epoch(self.epoch * 1000 + passes)
            got = False
            for sample in src:
                got = True
                yield sample
            passes += 1
            if not got:
                return

    def _draws(self) -> Iterator[tuple[int, dict[str, Any]]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        world, rank = self.sources[0]._world()
        rng = np.random.default_rng([self.seed, self.epoch, rank, worker, 7])
        if self.mode in ("concat", "repeat_factor"):
            for i, src in enumerate(self.sources):
                for sample in src:
                    if self.mode == "concat":
                        yield i, sample
                        continue
                    r = self._factor(i, sample)
                    for _ in range(int(r) + (rng.random() < r - int(r))):
                        yield i, sample
            return
        b0, b1 = _split_evenly(math.ceil(len(self) / self.batch_size), workers, worker)
        quota = min(b1 * self.batch_size, len(self)) - b0 * self.batch_size
        streams = [self._endless(i) for i in range(len(self.sources))]
        for _ in range(max(quota, 0)):
            i = int(rng.choice(len(self.sources), p=self.weights))
            yield i, next(streams[i])

    def _factor(self, i: int, sample: dict[str, Any]) -> float:
        if self._factors is None:
            self._factors = [repeat_factors(s, threshold=self.repeat_threshold) for s in self.sources]
        return self._factors[i].get(sample["key"], 1.0)

    def __iter__(self) -> Iterator[Any]:
        if hasattr(self.transform, "reseed"):
            info = get_worker_info()
            rng = np.random.default_rng([self.seed, self.epoch, self.sources[0]._world()[1], info.id if info else 0])
            self.transform.reseed(int(rng.integers(2**31)))
        for i, sample in self._draws():
            sample = _remap(sample, self.maps[i])
            sample["source"] = i
            if self.kinds[i] is not None:
                sample["kinds"] = self.kinds[i]
            yield self.transform(sample) if self.transform else sample
