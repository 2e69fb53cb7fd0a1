"""The segmentation path as a user types it: objmtl-train task=seg, objmtl-test --show-dir --out, and
coco128-val-lightly converted, trained with the converter's printed command, evaluated."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from objmtl.data import ShardDataset, read_meta
from tests.helpers import run_cli

pytestmark = pytest.mark.slow


def test_deeplabv3_train_and_test_from_the_cli(synth_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train = run_cli("objmtl-train", "task=seg", "model=deeplabv3", "debug=fast", f"data.root={synth_root}",
                    "data.batch_size=4", "logger=csv", f"hydra.run.dir={run}", cwd=tmp_path)
    assert train.returncode == 0, train.stderr[-3000:]
    assert (run / "checkpoints" / "best.ckpt").is_file() and "val/miou" in train.stdout
    test = run_cli("objmtl-test", str(run), "--eval", "mIoU", "--show-dir", "d", "--out", "m", "data.num_workers=0",
                   cwd=tmp_path)
    assert test.returncode == 0, test.stderr[-3000:]
    assert "test/miou" in test.stdout and "per-class IoU" in test.stdout
    n = read_meta(synth_root).count("test")
    assert len(list((tmp_path / "d").glob("*.png"))) == len(list((tmp_path / "m").glob("*.png"))) == n


@pytest.mark.realdata
def test_convert_train_and_test_coco128_val_lightly_from_the_cli(real_data: Path, tmp_path: Path) -> None:
    shards, run = tmp_path / "lightly", tmp_path / "run"
    convert = run_cli("objmtl-data", "convert", "--format", "masks",
                      "--src", str(real_data / "segmentation" / "coco128-val-lightly"), "--images", "images/val2017",
                      "--masks", "semantic_segmentation/masks/val2017", "--class-map",
                      "semantic_segmentation/config.yaml", "--val-fraction", "0.2", "--seed", "0", "--workers", "1",
                      "--out", str(shards))
    assert convert.returncode == 0, convert.stderr
    command = f"objmtl-train --config-dir {shards / 'conf'} task=seg data=local_lightly"
    assert command in convert.stdout
    written = yaml.safe_load((shards / "conf" / "data" / "local_lightly.yaml").read_text())
    assert written["defaults"][0] == "seg"
    meta = read_meta(shards)
    assert len(meta.mask_classes) == 129 and "unlabeled" not in meta.mask_classes  # 0/unlabeled -> 255

    train = run_cli(*command.split(), "debug=fast", "data.batch_size=2", "data.image_size=128",
                    "model.fpn_channels=32", "model.head_channels=32", "logger=csv", f"hydra.run.dir={run}",
                    cwd=tmp_path)
    assert train.returncode == 0, train.stderr[-3000:]
    test = run_cli("objmtl-test", str(run), "--out", "m", "--show-dir", "d", "data.num_workers=0", cwd=tmp_path)
    assert test.returncode == 0, test.stderr[-3000:]
    assert "val/miou" in test.stdout and "per-class IoU" in test.stdout
    sizes = {str(s["ann"]["image_id"]): s["image"].shape[:2] for s in ShardDataset(root=shards, split="val")}
    pngs = {p.stem: p for p in (tmp_path / "m").glob("*.png")}
    assert set(pngs) == set(sizes) and len(sizes) == meta.count("val")
    for stem, path in pngs.items():  # at the original size, values are training ids
        with Image.open(path) as im:
            array = np.asarray(im)
        assert array.shape == sizes[stem] and array.max() < 129
