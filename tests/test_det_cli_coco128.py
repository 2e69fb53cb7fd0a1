"""The detection path as a user types it: convert coco128, train with the printed command, evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from objmtl.data import ShardDataset, read_meta
from tests.helpers import run_cli

pytestmark = [pytest.mark.realdata, pytest.mark.slow]


def test_convert_train_and_test_coco128_from_the_cli(real_data: Path, tmp_path: Path) -> None:
    shards, run = tmp_path / "coco128", tmp_path / "run"
    convert = run_cli("objmtl-data", "convert", "--format", "yolo", "--src", str(real_data / "detection" / "coco128"),
                      "--images", "images/train2017", "--labels", "labels/train2017", "--names", "config.yaml",
                      "--val-fraction", "0.25", "--seed", "0", "--workers", "1", "--out", str(shards))
    assert convert.returncode == 0, convert.stderr
    data_cfg = shards / "conf" / "data" / "local_coco128.yaml"
    command = f"objmtl-train --config-dir {shards / 'conf'} task=det data=local_coco128"
    assert command in convert.stdout
    written = yaml.safe_load(data_cfg.read_text())
    assert written["defaults"][0] == "det" and written["group_by_aspect"] is True

    train = run_cli(*command.split(), "debug=fast", "data.image_size=128", "data.batch_size=2", "model.fpn_channels=32",
                    "model.num_convs=1", "logger=csv", f"hydra.run.dir={run}", cwd=tmp_path)
    assert train.returncode == 0, train.stderr[-3000:]
    assert (run / "checkpoints" / "best.ckpt").is_file()  # debug=fast keeps one checkpoint: best

    preds, show = tmp_path / "preds.json", tmp_path / "show"
    test = run_cli("objmtl-test", str(run), "--eval", "bbox", "map", "--out", str(preds), "--show-dir", str(show),
                   "--show-score-thr", "0", "data.num_workers=0", cwd=tmp_path)
    assert test.returncode == 0, test.stderr[-3000:]
    assert "val/map_50" in test.stdout and "val/voc_map" in test.stdout and "per-class AP" in test.stdout
    val = {int(s["ann"]["image_id"]) for s in ShardDataset(root=shards, split="val")}
    assert len(val) == read_meta(shards).count("val") == 16
    assert {int(p.stem) for p in show.glob("*.png")} == val
    records = json.loads(preds.read_text())
    assert isinstance(records, list)
    assert all(r["image_id"] in val and 0 <= r["category_id"] < 80 for r in records)
    report = json.loads((run / "eval_val" / "metrics.json").read_text())
    assert report["split"] == "val" and "val/map" in report["metrics"]
