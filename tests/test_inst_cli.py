"""Task kind inst as a user meets it: objmtl-train task=inst on the synthetic set with no data arguments, then
objmtl-test with --eval segm, --out (COCO results: RLE masks, and the boxes apart) and --show-dir."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from faster_coco_eval.core import mask as cmask

from tests.helpers import run_cli


def test_inst_trains_and_tests_from_the_cli(tmp_path: Path) -> None:
    run = tmp_path / "run"
    # no data arguments: data=inst writes the synthetic set to the cache (a small one here, to keep the test short)
    train = run_cli("objmtl-train", "task=inst", "debug=fast", "data.synth.n=60", "data.synth.image_size=64",
                    "data.batch_size=4", "data.eval_batch_size=8", "logger=csv", f"hydra.run.dir={run}", cwd=tmp_path)
    assert train.returncode == 0, train.stderr[-3000:]
    assert "val/segm_map_50" in train.stdout and "val/bbox_map_50" in train.stdout
    assert "objmtl-export" not in train.stdout  # no export for this kind yet: nothing printed that cannot run
    assert (run / "checkpoints" / "best.ckpt").is_file() and (run / "plots" / "pr_curves_val.png").is_file()
    rows = json.loads((run / "per_class_ap_val.json").read_text())
    assert rows and set(rows[0]) == {"class_id", "class", "gts", "segm_ap", "segm_ap50", "bbox_ap", "bbox_ap50"}

    test = run_cli("objmtl-test", str(run), "--split", "test", "--eval", "segm", "--out", "results.json",
                   "--show-dir", "shown", "--show-score-thr", "0", cwd=tmp_path)
    assert test.returncode == 0, test.stderr[-3000:]
    assert "test/segm_map_50" in test.stdout and "test/bbox_map_50" not in test.stdout  # --eval segm
    assert "per-class AP" in test.stdout and "results_bbox.json" in test.stdout
    segm = json.loads((tmp_path / "results.json").read_text())
    bbox = json.loads((tmp_path / "results_bbox.json").read_text())
    assert len(segm) == len(bbox) > 0  # an untrained Mask R-CNN still gives low-score detections
    for s, b in zip(segm[:20], bbox[:20], strict=True):
        assert set(s) == {"image_id", "category_id", "segmentation", "score"} and s["score"] == b["score"]
        assert s["segmentation"]["size"] == [64, 64]  # the original image's size
        x, y, w, h = b["bbox"]
        if float(cmask.area(s["segmentation"])):  # each mask was pasted into its own box (torchvision pastes
            mx, my, mw, mh = cmask.toBbox(s["segmentation"]).tolist()  # into the box grown by 1 px, rounded)
            assert x - 2 <= mx and y - 2 <= my and mx + mw <= x + w + 2 and my + mh <= y + h + 2, (s, b)
    pictures = sorted((tmp_path / "shown").glob("*.png"))
    assert len(pictures) == 6  # the test split of 60 images: 6
    from PIL import Image

    picture = np.asarray(Image.open(pictures[0]))
    assert picture.shape[1] >= 2 * 64  # prediction beside ground truth
