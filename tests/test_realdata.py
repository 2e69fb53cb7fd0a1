"""Real image folders: they convert with exact counts, load, and train to a useful accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from objmtl.data import ShardDataset, read_meta
from objmtl.runs.train import train
from tests.helpers import compose_train, run_cli

pytestmark = pytest.mark.realdata


def _count_images(folder: Path) -> dict[str, int]:
    """Per class folder, the image files (independent of objmtl's own listing)."""
    return {d.name: sum(1 for f in d.iterdir() if f.suffix.lower() in (".jpg", ".jpeg", ".png"))
            for d in sorted(folder.iterdir()) if d.is_dir()}


def _convert(src: Path, out: Path, *args: str) -> dict:
    result = run_cli("objmtl-data", "convert", "--format", "imagefolder", "--src", str(src), "--out", str(out),
                     *args, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"data.root={out}" in result.stdout
    return json.loads((out / "report.json").read_text())


def _labels(root: Path, split: str) -> list[int]:
    return [s["ann"]["label"] for s in ShardDataset(root=root, split=split)]


def test_hymenoptera_converts_and_loads(real_data: Path, tmp_path: Path) -> None:
    src = real_data / "classification" / "hymenoptera_data"
    counts = _count_images(src / "train")
    assert counts == {"ants": 25, "bees": 25}
    out = tmp_path / "shards"
    report = _convert(src, out, "--val-fraction", "0.2", "--seed", "1")
    meta = read_meta(out)
    assert meta.classes == ["ants", "bees"] and meta.tasks == ["cls"]
    assert report["samples_written"] == {"train": 40, "val": 10} and report["dropped"] == {}
    assert sorted(_labels(out, "val")) == [0] * 5 + [1] * 5
    from hydra.utils import instantiate

    cfg = compose_train("data=shards", f"data.root={out}", "data.num_workers=0", "data.image_size=96",
                        run_dir=tmp_path / "run")
    dm = instantiate(cfg.data)
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (32, 3, 96, 96)
    assert set(batch["label"].tolist()) <= {0, 1}


def test_mnist160_six_per_class_reach_60_percent(real_data: Path, tmp_path: Path) -> None:
    src = real_data / "classification" / "mnist160"
    assert _count_images(src / "train") == {str(d): 8 for d in range(10)}
    out = tmp_path / "shards"
    _convert(src, out, "--val-fraction", "0.25", "--seed", "0")
    assert np.bincount(_labels(out, "train")).tolist() == [6] * 10
    assert np.bincount(_labels(out, "val")).tolist() == [2] * 10
    cfg = compose_train("experiment=cls_small_digits", f"data.root={out}", "data.num_workers=0", "logger=csv",
                        run_dir=tmp_path / "run")
    summary = train(cfg)
    assert summary["best"]["value"] >= 0.6, summary


def test_sklearn_digits_reach_90_percent(tmp_path: Path) -> None:
    """1,797 real 8x8 digits shipped inside scikit-learn, as an image folder, split 80/20."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    src = tmp_path / "digits"
    for i, (image, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        (src / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray((image * 255 / 16).round().astype(np.uint8)).save(src / str(label) / f"{i:04d}.png")
    out = tmp_path / "shards"
    report = _convert(src, out, "--val-fraction", "0.2", "--seed", "0")
    assert sum(report["samples_written"].values()) == 1797
    assert report["samples_written"]["val"] == pytest.approx(1797 * 0.2, abs=10)
    cfg = compose_train("experiment=cls_small_digits", f"data.root={out}", "data.num_workers=0", "logger=csv",
                        "trainer.max_epochs=6", "trainer.check_val_every_n_epoch=3", run_dir=tmp_path / "run")
    summary = train(cfg)
    assert summary["best"]["value"] >= 0.9, summary
