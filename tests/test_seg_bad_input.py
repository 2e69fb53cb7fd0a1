"""Bad segmentation input never stops an epoch: a mask of another size is a counted skip (or, with
data.on_decode_error=raise, one clear line); a mask value with no class is ignored and counted."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from objmtl.data.shard_writer import ShardSetWriter
from objmtl.data.synth import render_sample, synth_meta
from objmtl.errors import UserError
from objmtl.runs.train import train
from tests.helpers import compose_train

torch.set_num_threads(2)


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def bad_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 train / 4 val synthetic samples; in each split one has a 20 x 20 mask, one a mask value 9 (5 classes)."""
    root = tmp_path_factory.mktemp("seg_bad") / "shards"
    with ShardSetWriter(root, meta=synth_meta()) as writer:
        for i in range(12):
            image, ann, mask = render_sample(i, seed=0, image_size=48)
            if i in (1, 9):
                mask = np.zeros((20, 20), np.uint8)
            if i in (2, 10):
                mask = mask.copy()
                mask[:8, :8] = 9
            writer.write("train" if i < 8 else "val", image=_png(image), ext="png", ann=ann, mask=_png(mask))
    return root


def _cfg(root: Path, run_dir: Path, *extra: str):
    return compose_train("task=seg", f"data.root={root}", "data.image_size=48", "data.num_workers=0",
                         "data.batch_size=2", "data.eval_batch_size=4", "trainer.max_epochs=1", "logger=csv",
                         "model.fpn_channels=32", "model.head_channels=32", "test_after_fit=false",
                         "data.train_transform=${data.eval_transform}", *extra,
                         run_dir=run_dir)


def test_bad_masks_are_counted_and_the_epoch_finishes(bad_root: Path, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    from objmtl.runs.evaluate import evaluate

    train(_cfg(bad_root, tmp_path / "run"))
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    rows = list(csv.DictReader((tmp_path / "run" / "csv" / "metrics.csv").open()))
    epoch = next(r for r in rows if r.get("data/skipped"))
    assert float(epoch["data/skipped"]) == 1.0  # the 20 x 20 mask: decode refuses it, the reader counts it
    # the 8 x 8 pixels of value 9, made ignore; twice when the skipped sample's slot went to this one (the
    # reader fills a skipped training slot with the previous good sample, so the epoch keeps its length)
    assert float(epoch["data/unknown_mask_pixels"]) in (64.0, 128.0)
    assert any(r.get("val/miou") for r in rows)  # validation ran inside the epoch
    assert any("differ in size" in r.message for r in caplog.records)
    assert any("mask value 9 has no class" in r.message for r in caplog.records)
    metrics = evaluate(tmp_path / "run", split="val", metrics_out=tmp_path / "m.json",
                       overrides=["data.num_workers=0"])  # the same two faults in the val split
    assert 0 <= metrics["val/miou"] <= 1


def test_on_decode_error_raise_names_the_sample(bad_root: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"sample 000000001: cannot decode \(mask \(20, 20\) and image \(48, 48\)"):
        train(_cfg(bad_root, tmp_path / "run", "data.on_decode_error=raise"))
