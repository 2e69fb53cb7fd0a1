"""coco8-seg (YOLO-seg polygons): the yolo converter keeps polygons (no mask files) and writes
mask_classes = background + classes; SegmentationSamples renders the masks from the polygons
(0 = background, class i -> i + 1), so the converted shards train as they are."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from objmtl.data import ShardDataset, read_meta
from objmtl.data.seg_samples import SegmentationSamples
from objmtl.runs.train import train
from tests.helpers import compose_train, run_cli

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def coco8_seg(real_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("coco8seg") / "shards"
    names = real_data / "detection" / "coco128" / "config.yaml"  # coco8-seg ships no yaml; the same 80 names
    result = run_cli("objmtl-data", "convert", "--format", "yolo", "--src", str(real_data / "segmentation" / "coco8-seg"),
                     "--images", "images", "--labels", "labels", "--names", str(names), "--task", "seg",
                     "--workers", "1", "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out


def test_polygon_shards_get_masks_rendered(coco8_seg: Path) -> None:
    meta = read_meta(coco8_seg)
    assert "seg" in meta.tasks and meta.mask_classes == ["background", *meta.classes]
    adapter = SegmentationSamples()
    n = 0
    for split in ("train", "val"):
        for sample in ShardDataset(root=coco8_seg, split=split):
            assert sample["mask"] is None and sample["ann"]["polygons"]
            out = adapter(sample)
            mask = out["mask"].numpy()
            assert out["unlabeled"] == 0 and mask.shape == sample["image"].shape[:2]
            ids = set(np.unique(mask).tolist()) - {0, 255}
            assert ids and ids <= {c + 1 for c in sample["ann"]["classes"]}
            n += 1
    assert n == 8


def test_converted_polygon_shards_train(coco8_seg: Path, tmp_path: Path) -> None:
    root = coco8_seg
    cfg = compose_train("task=seg", "debug=fast", f"data.root={root}", "data.batch_size=2",
                        "data.image_size=96", "model.fpn_channels=32", "model.head_channels=32", "logger=csv",
                        "test_after_fit=false", run_dir=tmp_path / "run")
    summary = train(cfg)
    assert 0 <= summary["val"]["val/miou"] <= 1
