"""The synthetic set of task kind ``reg``: the embedded shapes images, each with two measured targets.

The images and every other annotation are those of :func:`objmtl.data.synth.write_synthetic` (same seed, same
bytes); each sample's JSON adds ``targets``, two values read off its own mask:

- ``cover``: the fraction of the image's pixels that shapes cover (0..1);
- ``shapes``: how many shapes are visible (1..4).

``meta.json`` names them (``targets``) and gives the mean and standard deviation of each over the training
split (``target_mean``, ``target_std``), which the regression head normalises with. ``conf/data/reg_synth.yaml``
names :func:`write_regression_synthetic` as ``data.synth.writer``, so the set is written to the cache once.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from objmtl.data.shard_writer import ShardSetWriter
from objmtl.data.synth import _encode, render_sample, synth_meta
from objmtl.errors import UserError

__all__ = ["REG_TARGETS", "regression_targets", "write_regression_synthetic"]

REG_TARGETS = ("cover", "shapes")


def regression_targets(ann: dict[str, Any], mask: np.ndarray) -> list[float]:
    """``[cover, shapes]`` of one rendered sample (its annotation and H x W semantic mask)."""
    return [round(float((mask > 0).mean()), 6), float(len(ann["boxes"]))]


def target_stats(values: list[list[float]]) -> tuple[list[float], list[float]]:
    """Per target, the mean and the (population) standard deviation of ``values`` (rows of targets); a
    constant target gets std 1, so normalising leaves it centred rather than dividing by zero."""
    arr = np.asarray(values, np.float64).reshape(len(values), -1)
    mean, std = arr.mean(0), arr.std(0)
    std = np.where(std > 1e-12, std, 1.0)
    return [round(float(m), 6) for m in mean], [round(float(s), 6) for s in std]


def write_regression_synthetic(out: str | Path, *, n: int = 1000, seed: int = 0, image_size: int = 128,
                               val_fraction: float = 0.2, test_fraction: float = 0.1, max_count: int = 256,
                               overwrite: bool = False, progress: bool = False) -> Any:
    """Writes ``n`` synthetic samples with regression targets as a shard set at ``out`` (the arguments and
    split rule of :func:`objmtl.data.synth.write_synthetic`). Returns the written Meta."""
    n_val, n_test = round(n * val_fraction), round(n * test_fraction)
    n_train = n - n_val - n_test
    if n < 2 or image_size < 32 or max_count < 1 or min(n_val, n_test) < 0 or n_train < 1:
        raise UserError(f"synth: bad arguments n={n}, image_size={image_size}, max_count={max_count}, "
                        f"val_fraction={val_fraction}, test_fraction={test_fraction}")
    indices: Any = range(n)
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc=f"synth (regression) -> {out}", unit="img")
    meta = synth_meta()
    meta = replace(meta, tasks=[*meta.tasks, "reg"], source="synth-reg")
    writer = ShardSetWriter(out, meta=meta, max_count=max_count, overwrite=overwrite)
    train_targets: list[list[float]] = []
    try:
        for i in indices:
            split = "train" if i < n_train else "val" if i < n_train + n_val else "test"
            image, ann, mask = render_sample(i, seed=seed, image_size=image_size)
            ann["targets"] = regression_targets(ann, mask)
            if split == "train":
                train_targets.append(ann["targets"])
            writer.write(split, image=_encode(image, "JPEG"), ext="jpg", ann=ann, mask=_encode(mask, "PNG"))
        mean, std = target_stats(train_targets)
        writer.meta = replace(writer.meta, extra={"targets": list(REG_TARGETS), "target_mean": mean,
                                                  "target_std": std})
    except BaseException:
        writer.abort()
        raise
    return writer.close()
