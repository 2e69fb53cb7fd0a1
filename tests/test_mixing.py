"""Mixing shard sets: shares as asked, one label space, repeat factors, recorded with the run."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from objmtl.data.datamodule import ShardDataModule
from objmtl.data.mixing import MixedDataset, merge_metas, repeat_factors
from objmtl.data.schema import Meta, read_meta
from objmtl.data.shard_reader import ShardDataset
from objmtl.data.shard_writer import ShardSetWriter


def _png(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _set(root: Path, classes: list[str], labels: list[int], val_labels: list[int] = ()) -> Path:
    with ShardSetWriter(root, meta=Meta(classes=classes, tasks=["cls", "det"]), max_count=16) as w:
        for split, ys in (("train", labels), ("val", val_labels)):
            for i, y in enumerate(ys):
                w.write(split, image=_png(i % 250), ext="png",
                        ann={"label": y, "boxes": [[0, 0, 4, 4]], "classes": [y]})
    return root


@pytest.fixture
def two_sets(tmp_path: Path) -> tuple[Path, Path]:
    a = _set(tmp_path / "a", ["cat", "dog"], [i % 2 for i in range(40)])
    b = _set(tmp_path / "b", ["bird", "dog"], [i % 2 for i in range(100)])
    return a, b


def _mixed(roots: list[Path], mode: str, weights: list[float] | None, n: int) -> MixedDataset:
    meta, maps = merge_metas([read_meta(r) for r in roots])
    parts = [ShardDataset(root=r, split="train", shuffle=True, shuffle_buffer=8, seed=1) for r in roots]
    return MixedDataset(sources=parts, maps=maps, mode=mode, weights=weights, samples_per_epoch=n, seed=3)


@pytest.mark.parametrize(("mode", "weights", "expected"),
                         [("weighted", [0.7, 0.3], [0.7, 0.3]), ("balanced", None, [0.5, 0.5])])
def test_draws_follow_the_asked_shares(two_sets: tuple[Path, Path], mode: str, weights: list[float] | None,
                                       expected: list[float]) -> None:
    ds = _mixed(list(two_sets), mode, weights, 5000)
    loader = torch.utils.data.DataLoader(ds, batch_size=50, num_workers=2,
                                         collate_fn=lambda b: [s["source"] for s in b])
    shares = Counter(i for batch in loader for i in batch)
    assert sum(shares.values()) == 5000
    for i, want in enumerate(expected):
        assert abs(shares[i] / 5000 - want) <= 0.02, shares


def test_label_spaces_merge_and_samples_are_remapped(two_sets: tuple[Path, Path]) -> None:
    meta, maps = merge_metas([read_meta(r) for r in two_sets])
    assert meta.classes == ["cat", "dog", "bird"]
    assert maps[1]["classes"] == [2, 1]
    ds = _mixed(list(two_sets), "concat", None, 0)
    seen = Counter((s["source"], s["ann"]["label"], s["ann"]["classes"][0]) for s in ds)
    assert seen == Counter({(0, 0, 0): 20, (0, 1, 1): 20, (1, 2, 2): 50, (1, 1, 1): 50})


def test_repeat_factors_favour_rare_classes(tmp_path: Path) -> None:
    root = _set(tmp_path / "r", ["common", "rare"], [0] * 95 + [1] * 5)
    factors = repeat_factors(ShardDataset(root=root, split="train"), threshold=0.2)
    by_label = {0: set(), 1: set()}
    for s in ShardDataset(root=root, split="train"):
        by_label[s["ann"]["label"]].add(round(factors[s["key"]], 4))
    assert by_label == {0: {1.0}, 1: {2.0}}  # sqrt(0.2 / 0.05) = 2
    meta, maps = merge_metas([read_meta(root)])
    ds = MixedDataset(sources=[ShardDataset(root=root, split="train")], maps=maps, mode="repeat_factor",
                      repeat_threshold=0.2)
    labels = Counter(s["ann"]["label"] for s in ds)
    assert labels == Counter({0: 95, 1: 10})


def test_datamodule_sources_and_recorded_label_space(tmp_path: Path) -> None:
    from objmtl.runs.train import train
    from tests.helpers import compose_train

    a = _set(tmp_path / "a", ["cat", "dog"], [i % 2 for i in range(20)], [0, 1, 0, 1])
    b = _set(tmp_path / "b", ["bird", "dog"], [i % 2 for i in range(20)], [0, 1])
    dm = ShardDataModule(sources=[{"root": str(a)}, {"root": str(b)}], num_workers=0, batch_size=8)
    assert dm.read_meta().classes == ["cat", "dog", "bird"]
    assert sorted(s["label"] for s in dm.dataset("val")) == [0, 0, 1, 1, 1, 2]
    sources = f"[{{root:'{a}',weight:1}},{{root:'{b}',weight:3}}]"
    cfg = compose_train(f"data.sources={sources}", "data.mix=weighted", "data.samples_per_epoch=40",
                        "data.num_workers=0", "data.batch_size=8", "data.image_size=32", "trainer.max_epochs=1",
                        "logger=csv", "test_after_fit=false", run_dir=tmp_path / "run")
    train(cfg)
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["label_space"]["classes"] == ["cat", "dog", "bird"]
    assert saved["label_space"]["sources"][1]["classes"] == [2, 1]
    assert saved["model"]["num_classes"] == 3
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["objmtl"]["config"]["label_space"]["classes"] == ["cat", "dog", "bird"]
