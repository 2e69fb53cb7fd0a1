"""task=seg end to end on synthetic shards: train(cfg), then objmtl-test's evaluate() with --out and --show-dir."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from objmtl.data.shard_reader import ShardDataset
from objmtl.runs.seg_outputs import SegmentationOutputs
from tests.helpers import compose_train

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def seg_run(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from objmtl.runs.train import train

    run_dir = tmp_path_factory.mktemp("seg_run")
    cfg = compose_train("task=seg", "debug=fast", f"data.root={synth_root}", "data.batch_size=8",
                        "data.eval_batch_size=8", "trainer.limit_train_batches=3", "trainer.limit_val_batches=1",
                        "trainer.limit_test_batches=1", "model.fpn_channels=32", "model.head_channels=32",
                        "model.aux_head=true", "task.module.dice_weight=0.5", run_dir=run_dir)
    summary = train(cfg)
    assert {"val/miou", "val/pixel_acc", "val/macc", "val/loss"} <= set(summary["val"])
    assert 0.0 <= summary["best"]["value"] <= 1.0 and summary["best"]["metric"] == "val/miou"
    return run_dir


def test_training_logs_every_loss_term_and_writes_per_class_iou(seg_run: Path) -> None:
    header = (seg_run / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/loss", "train/loss_ce", "train/loss_aux", "train/loss_dice"} <= set(header)
    for stage in ("val", "test"):
        rows = json.loads((seg_run / f"per_class_iou_{stage}.json").read_text())
        assert [r["class"] for r in rows] == ["background", "circle", "square", "triangle", "diamond"]
        assert all(r["iou"] is None or 0 <= r["iou"] <= 1 for r in rows)
        assert rows[0]["gt_pixels"] > 0


def test_objmtl_test_writes_metrics_masks_and_overlays(seg_run: Path, synth_root: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from objmtl.runs.evaluate import evaluate

    metrics_out, show, masks = tmp_path / "m.json", tmp_path / "show", tmp_path / "masks"
    metrics = evaluate(seg_run, split="test", metrics_out=metrics_out, overrides=["data.num_workers=0"],
                       eval_metrics=["mIoU"], show_dir=show, out=masks)
    printed = capsys.readouterr().out
    assert "test/miou" in printed and "test/pixel_acc" in printed and "per-class IoU" in printed
    assert 0 <= metrics["test/miou"] <= 1
    report = json.loads(metrics_out.read_text())
    assert report["per_class"] and {"class", "iou", "acc", "gt_pixels", "pred_pixels"} <= set(report["per_class"][0])

    originals = {int(s["ann"]["image_id"]): s["image"].shape[:2] for s in ShardDataset(root=synth_root, split="test")}
    pngs = sorted(masks.glob("*.png"))
    assert sorted(int(p.stem) for p in pngs) == sorted(originals)
    for p in pngs:  # class ids at the original size (the model saw 128 px, the shards hold 64 px)
        with Image.open(p) as im:
            array = np.asarray(im)
        assert im.mode == "L" and array.shape == originals[int(p.stem)] and array.max() < 5
    shown = sorted(show.glob("*.png"))
    assert sorted(int(p.stem) for p in shown) == sorted(originals)
    h, w = originals[int(shown[0].stem)]
    with Image.open(shown[0]) as im:  # prediction and ground truth side by side under a title row
        assert im.width == 2 * w + 4 and im.height > h


def test_sliding_window_evaluation_gives_metrics_too(seg_run: Path, tmp_path: Path) -> None:
    from objmtl.runs.evaluate import evaluate

    metrics = evaluate(seg_run, split="val", metrics_out=tmp_path / "m.json",
                       overrides=["data.num_workers=0", "task.module.inference=slide", "task.module.window=96"])
    assert 0 <= metrics["val/miou"] <= 1 and 0 <= metrics["val/pixel_acc"] <= 1


def test_eval_groups() -> None:
    from objmtl.errors import UserError

    with pytest.raises(UserError, match="--eval bbox: use mIoU"):
        SegmentationOutputs.check_groups(["bbox"])
    metrics = {"test/miou": 0.5, "test/pixel_acc": 0.9, "test/macc": 0.6, "test/loss": 1.0}
    assert SegmentationOutputs.select(metrics, ["mIoU"]) == metrics
