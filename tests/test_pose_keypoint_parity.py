"""Keypoint AP/AR parity: pycocotools on tiny_coco's person_keypoints json vs objmtl on the converted shards.

The predictions are the ground truth perturbed (noise scaled to each person, random scores, some
persons missed, some false positives, predictions on crowd and unlabelled boxes too), so every
branch of OKS matching is exercised; crowd annotations are in both ground truths.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch

from objmtl.data.pose_samples import PoseSamples, TopDownCrop
from objmtl.data.shard_reader import ShardDataset
from objmtl.metrics.keypoints import KEYPOINT_KEYS, KeypointMetrics, oks_sigmas
from tests.helpers import run_cli

pytestmark = pytest.mark.realdata

torch.set_num_threads(2)

ANN = "annotations/person_keypoints_train2017.json"


def _perturbed_predictions(gt_json: dict, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    sizes = {im["id"]: (im["width"], im["height"]) for im in gt_json["images"]}
    results = []
    for ann in gt_json["annotations"]:
        if rng.random() < 0.1:  # a missed person
            continue
        kp = np.asarray(ann["keypoints"], np.float64).reshape(17, 3)
        x, y, w, h = ann["bbox"]
        noise = rng.normal(0, 0.04 * np.sqrt(max(ann["area"], 1.0)) * rng.uniform(0.2, 2.5), (17, 2))
        xy = np.where(kp[:, 2:] > 0, kp[:, :2], rng.uniform([x, y], [x + w, y + h], (17, 2))) + noise
        pred = np.column_stack([xy, rng.uniform(0.1, 1.0, 17)])
        results.append({"image_id": ann["image_id"], "category_id": 1, "keypoints": pred.reshape(-1).tolist(),
                        "score": float(rng.uniform(0.05, 1.0))})
    ids = sorted(sizes)
    for _ in range(15):  # false positives
        image_id = ids[int(rng.integers(len(ids)))]
        w, h = sizes[image_id]
        xy = rng.uniform([0, 0], [w, h], (17, 2))
        pred = np.column_stack([xy, rng.uniform(0.1, 1.0, 17)])
        results.append({"image_id": image_id, "category_id": 1, "keypoints": pred.reshape(-1).tolist(),
                        "score": float(rng.uniform(0.05, 1.0))})
    return results


def _pycocotools(gt_file: Path, results: list[dict]) -> np.ndarray:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    coco_gt = COCO(str(gt_file))
    ev = COCOeval(coco_gt, coco_gt.loadRes(results), "keypoints")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return np.asarray(ev.stats[:10])


def _objmtl(root: Path, results: list[dict]) -> tuple[np.ndarray, int, int]:
    by_image = defaultdict(list)
    for r in results:
        by_image[r["image_id"]].append(r)
    adapter = PoseSamples(transform=TopDownCrop(input_size=(64, 48), num_keypoints=17))
    metric = KeypointMetrics(sigmas=oks_sigmas(num_keypoints=17))
    images, crowd = 0, 0
    for sample in ShardDataset(root=root, split="train"):
        image = adapter(sample)["image"]
        crowd += int(image["gt"]["iscrowd"].sum())
        mine = by_image.get(image["image_id"], [])
        pred = {"keypoints": torch.tensor([r["keypoints"] for r in mine], dtype=torch.float64).reshape(-1, 17, 3),
                "scores": torch.tensor([r["score"] for r in mine], dtype=torch.float64),
                "labels": torch.zeros(len(mine), dtype=torch.long)}
        metric.update([pred], [{"image_id": image["image_id"], "orig_size": image["orig_size"], **image["gt"]}])
        images += 1
    stats = metric.compute()
    return np.array([stats[k] for k in KEYPOINT_KEYS]), images, crowd


def test_keypoint_ap_matches_pycocotools_on_tiny_coco(real_data: Path, tmp_path: Path) -> None:
    src = real_data / "pose" / "tiny_coco"
    out = tmp_path / "shards"
    done = run_cli("objmtl-data", "convert", "--format", "coco", "--src", str(src), "--ann", f"train={ANN}",
                   "--images", "train2017", "--val-fraction", "0", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "task=pose data=local_shards" in done.stdout  # keypoint shards: the printed commands train pose
    assert f"task=pose data=pose data.root={out}" in done.stdout
    gt_json = json.loads((src / ANN).read_text())
    results = _perturbed_predictions(gt_json)
    reference = _pycocotools(src / ANN, results)
    ours, images, crowd = _objmtl(out, results)
    assert images == len(gt_json["images"])
    assert crowd == sum(a["iscrowd"] for a in gt_json["annotations"]) > 0
    assert 0.05 < reference[0] < 0.95  # a figure that can move either way
    np.testing.assert_allclose(ours, reference, atol=1e-4)
