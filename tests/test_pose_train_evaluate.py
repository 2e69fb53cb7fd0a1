"""task=pose end to end on synthetic shards: train briefly, then objmtl-test with --out and --show-dir.

One sample in each split is rewritten with bad instances (a keypoint array of the wrong length, a
zero-size box), as a hand-made or foreign shard could hold: they are counted, never fatal.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from objmtl.runs.pose_outputs import EVAL_GROUPS, PoseOutputs
from tests.helpers import compose_train

torch.set_num_threads(2)

SMALL = ("data.image_size=[96,64]", "data.num_workers=0", "data.batch_size=8", "data.eval_batch_size=8",
         "model.backbone.name=resnet18", "model.deconv_channels=[32,32,32]")


def _spoil_first_sample(shard: Path) -> int:
    """Rewrites the first sample's json of a tar: one more instance with 3 keypoints, one zero-size box."""
    members = []
    with tarfile.open(shard) as tar:
        for m in tar.getmembers():
            members.append((m, tar.extractfile(m).read()))
    first_json = next(i for i, (m, _) in enumerate(members) if m.name.endswith(".json"))
    m, data = members[first_json]
    ann = json.loads(data)
    ann["boxes"] += [[5.0, 5.0, 30.0, 30.0], [10.0, 10.0, 10.0, 40.0]]
    ann["keypoints"] += [[[6.0, 6.0, 2.0]] * 3, [[10.0, 12.0, 2.0]] * 4]
    for key in ("classes", "iscrowd", "area", "difficult", "truncated"):
        if key in ann:
            ann[key] += [ann[key][0]] * 2
    ann["polygons"] = ann.get("polygons", [[]] * (len(ann["boxes"]) - 2)) + [[], []]
    data = json.dumps(ann).encode()
    m.size = len(data)
    members[first_json] = (m, data)
    with tarfile.open(shard, "w") as tar:
        for m, data in members:
            tar.addfile(m, io.BytesIO(data))
    return int(ann["image_id"])


@pytest.fixture(scope="module")
def pose_data(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pose") / "shards"
    shutil.copytree(synth_root, root)
    for split in ("train", "test"):
        _spoil_first_sample(sorted((root / split).glob("*.tar"))[0])
    return root


@pytest.fixture(scope="module")
def pose_run(pose_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from objmtl.runs.train import train

    run_dir = tmp_path_factory.mktemp("pose_run")
    cfg = compose_train("task=pose", "debug=fast", f"data.root={pose_data}", *SMALL, "trainer.limit_train_batches=2",
                        "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "data.shuffle_buffer=1",
                        run_dir=run_dir)
    summary = train(cfg)
    assert {"val/ap", "val/ap50", "val/ap75", "val/ar", "val/pck"} <= set(summary["val"])
    assert summary["best"]["metric"] == "val/ap"
    return run_dir


def test_training_logs_the_keypoint_metrics_and_counts_dropped_persons(pose_run: Path) -> None:
    metrics = json.loads((pose_run / "metrics.json").read_text())
    assert all(-1 <= v <= 1 for k, v in metrics["val"].items() if k.split("/")[1] in (*EVAL_GROUPS["keypoints"], "pck"))
    assert metrics["test"]["test/dropped_persons"] == 2.0  # the spoiled test sample: one of each
    import csv

    rows = list(csv.DictReader((pose_run / "csv" / "metrics.csv").open()))
    assert any(r.get("train/dropped_persons") for r in rows)
    assert (pose_run / "checkpoints" / "best.ckpt").is_file()


def test_objmtl_test_writes_keypoint_results_and_skeleton_pictures(pose_run: Path, pose_data: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from objmtl.data.shard_reader import ShardDataset
    from objmtl.runs.evaluate import evaluate

    out, show, results = tmp_path / "m.json", tmp_path / "show", tmp_path / "k.json"
    evaluate(pose_run, split="test", metrics_out=out, overrides=["data.num_workers=0"], eval_metrics=["pck"],
             show_dir=show, out=results, show_score_thr=0.0)
    printed = capsys.readouterr().out
    assert "test/pck" in printed and "test/ap50" not in printed  # keypoints not asked for: in the json only
    assert "persons not evaluated: 1 zero size box, 1 bad keypoints" in printed
    report = json.loads(out.read_text())
    assert {"test/ap", "test/ap50", "test/ap75", "test/ar", "test/pck"} <= set(report["metrics"])
    assert report["dropped_persons"] == {"zero_size_box": 1, "bad_keypoints": 1}

    originals = {int(s["ann"]["image_id"]): s for s in ShardDataset(root=pose_data, split="test")}
    pngs = sorted(show.glob("*.png"))
    assert sorted(int(p.stem) for p in pngs) == sorted(originals)
    h, w = originals[int(pngs[0].stem)]["image"].shape[:2]
    with Image.open(pngs[0]) as im:  # prediction beside ground truth, original size, under a title row
        assert im.width == 2 * w + 4 and im.height > h

    dets = json.loads(results.read_text())
    persons = sum(sum(1 for c, b in zip(s["ann"]["iscrowd"], s["ann"]["boxes"], strict=True)
                      if not c and b[2] > b[0] and b[3] > b[1]) for s in originals.values())
    assert len(dets) == persons - 1  # every non-crowd box with a size, less the one with bad keypoints
    for d in dets:
        assert set(d) == {"image_id", "category_id", "keypoints", "score"} and d["image_id"] in originals
        kp = np.asarray(d["keypoints"]).reshape(4, 3)
        oh, ow = originals[d["image_id"]]["image"].shape[:2]
        assert np.all(kp[:, :2] > -ow) and np.all(kp[:, 0] < 2 * ow) and np.all(kp[:, 1] < 2 * oh)
        assert 0 <= d["category_id"] < 4


def test_eval_groups_select_the_printed_metrics() -> None:
    metrics = {f"test/{k}": 0.5 for keys in EVAL_GROUPS.values() for k in keys} | {"test/loss": 1.0}
    assert set(PoseOutputs.select(metrics, ["pck"])) == {"test/pck", "test/loss"}
    assert set(PoseOutputs.select(metrics, None)) == set(metrics)
    from objmtl.errors import UserError

    with pytest.raises(UserError, match="--eval bbox: use keypoints, pck"):
        PoseOutputs.check_groups(["bbox"])


def test_evaluating_on_detected_boxes_equal_to_the_ground_truth_gives_the_same_ap(
        pose_run: Path, pose_data: Path, tmp_path: Path) -> None:
    from objmtl.data.shard_reader import ShardDataset
    from objmtl.runs.evaluate import evaluate

    detections = []
    for s in ShardDataset(root=pose_data, split="test"):
        a = s["ann"]
        for box, label, crowd, kps in zip(a["boxes"], a["classes"], a["iscrowd"], a["keypoints"], strict=True):
            if not crowd and len(kps) == 4:  # what the ground-truth evaluation crops (zero-size boxes too: dropped)
                x1, y1, x2, y2 = box
                detections.append({"image_id": a["image_id"], "category_id": label, "bbox": [x1, y1, x2 - x1, y2 - y1],
                                   "score": 1.0})
    detections.append({"image_id": a["image_id"], "category_id": 9, "bbox": [1, 1, 5, 5], "score": 1.0})  # other class
    dets_file = tmp_path / "dets.json"
    dets_file.write_text(json.dumps(detections))
    base = ["data.num_workers=0"]
    on_gt = evaluate(pose_run, split="test", metrics_out=tmp_path / "gt.json", out=tmp_path / "gt_k.json",
                     overrides=base)
    on_dets = evaluate(pose_run, split="test", metrics_out=tmp_path / "dets_metrics.json", out=tmp_path / "k.json",
                       overrides=[*base, f"data.eval_transform.detections={dets_file}",
                                  "data.eval_transform.detection_category_ids=[0,1,2,3]"])
    for key in ("ap", "ap50", "ar"):
        assert on_dets[f"test/{key}"] == pytest.approx(on_gt[f"test/{key}"], abs=1e-9)
    assert on_dets["test/pck"] == -1 and on_gt["test/pck"] >= 0  # no ground-truth partner on detected boxes
    from_dets = json.loads((tmp_path / "k.json").read_text())
    assert len(from_dets) == len(detections) - 2  # less the zero-size box and the other class

    def persons(results: list[dict]) -> list[tuple]:
        return sorted((r["image_id"], r["category_id"], *np.round(r["keypoints"], 2)) for r in results)

    assert persons(from_dets) == persons(json.loads((tmp_path / "gt_k.json").read_text()))


def test_a_missing_detections_file_is_a_clear_error(pose_run: Path, tmp_path: Path) -> None:
    from objmtl.errors import UserError
    from objmtl.runs.evaluate import evaluate

    with pytest.raises(UserError, match="data.eval_transform.detections=.*nope.json: no such file"):
        evaluate(pose_run, split="test", metrics_out=tmp_path / "m.json",
                 overrides=["data.num_workers=0", f"data.eval_transform.detections={tmp_path / 'nope.json'}"])
