"""Instance segmentation metrics equal pycocotools' COCOeval on tiny_coco (polygons and crowd RLEs).

pycocotools reads ``instances_train2017.json`` as it is; objmtl reads the shards the COCO converter wrote from it
(outlines rasterised by :mod:`objmtl.data.instance_masks`, crowd regions from the stored RLEs). Both score the same
predictions: every ground-truth outline (crowd regions too), shifted and thinned at random, with random scores, and
false positives of every COCO size. All 12 figures of ``segm`` and of ``bbox`` agree within 1e-4; so do those of
the results json that objmtl writes, scored by pycocotools against the source json.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from faster_coco_eval.core import mask as cmask

from objmtl.data import ShardDataset, read_meta
from objmtl.data.convert.coco import read_coco
from objmtl.data.convert.engine import run_conversion
from objmtl.data.instance_masks import decode_rles, encode_masks, instance_rles
from objmtl.metrics.instance import InstanceMetrics
from objmtl.runs.inst_outputs import instance_results

pytestmark = pytest.mark.realdata

pycocotools = pytest.importorskip("pycocotools")  # dev extra
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402

STAT_NAMES = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large",
              "mar_1", "mar_10", "mar_100", "mar_small", "mar_medium", "mar_large")


def _perturbed(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A ground-truth mask moved by a few pixels and with some of its pixels dropped: IoUs spread over 0.3-1."""
    dy, dx = (int(v) for v in rng.integers(-4, 5, size=2))
    out = np.roll(mask, (dy, dx), axis=(0, 1))
    return (out & (rng.random(out.shape) > rng.uniform(0, 0.3))).astype(np.uint8)


def _predictions(coco: COCO, class_ids: list[int], seed: int = 0) -> list[dict]:
    """COCO results (``segmentation`` RLE, ``bbox``, ``score``): perturbed gts plus false positives."""
    rng = np.random.default_rng(seed)
    results = []
    for image_id in sorted(coco.getImgIds()):
        info = coco.imgs[image_id]
        h, w = info["height"], info["width"]
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=[image_id], iscrowd=None)):
            if rng.random() < 0.15:  # a miss
                continue
            mask = _perturbed(coco.annToMask(ann), rng)
            if mask.sum() == 0:
                continue
            cid = ann["category_id"] if rng.random() > 0.1 else int(rng.choice(class_ids))  # some wrong classes
            results.append({"image_id": image_id, "category_id": cid, "mask": mask, "score": float(rng.random())})
        for side in (12, 48, 160):  # false positives: small, medium and large
            y, x = int(rng.integers(0, max(h - side, 1))), int(rng.integers(0, max(w - side, 1)))
            mask = np.zeros((h, w), np.uint8)
            mask[y:y + side, x:x + side] = 1
            results.append({"image_id": image_id, "category_id": int(rng.choice(class_ids)), "mask": mask,
                            "score": float(rng.random() * 0.8)})
    for r in results:
        (r["segmentation"],) = encode_masks(r.pop("mask")[None])
        x, y, bw, bh = (float(v) for v in cmask.toBbox(r["segmentation"]))
        r["bbox"] = [x, y, bw, bh]
    return results


def _cocoeval(gt: COCO, results: list[dict], iou_type: str) -> np.ndarray:
    """COCOeval's 12 figures of ``results`` in COCO's format for ``iou_type``: ``segmentation`` records carry no
    ``bbox`` (pycocotools would take a detection's area from it), ``bbox`` records no ``segmentation``."""
    drop = "bbox" if iou_type == "segm" else "segmentation"
    results = [{k: v for k, v in r.items() if k != drop} for r in results]
    ev = COCOeval(gt, gt.loadRes(results), iou_type)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return np.asarray(ev.stats)


@pytest.fixture(scope="module")
def tiny_inst(real_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    src = real_data / "pose" / "tiny_coco"
    ann_file = src / "annotations" / "instances_train2017.json"
    out = tmp_path_factory.mktemp("tiny_inst") / "shards"
    conv = read_coco(src, anns={"train": ann_file}, images="train2017", val_fraction=0.0)
    run_conversion(conv, out, workers=1, progress=False)
    return {"json": ann_file, "shards": out}


def test_segm_and_bbox_ap_equal_pycocotools_and_so_does_the_results_json(tiny_inst: dict, tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture) -> None:
    gt = COCO(str(tiny_inst["json"]))
    anns = gt.dataset["annotations"]
    assert sum(a["iscrowd"] for a in anns) >= 3 and any(isinstance(a["segmentation"], list) for a in anns)
    meta = read_meta(tiny_inst["shards"])
    assert "inst" in meta.tasks and meta.schema_version == 2
    results = _predictions(gt, meta.class_ids)
    theirs = {t: _cocoeval(gt, results, t) for t in ("segm", "bbox")}
    capsys.readouterr()

    label_of = {cid: i for i, cid in enumerate(meta.class_ids)}
    by_image: dict[int, list[dict]] = {}
    for r in results:
        by_image.setdefault(r["image_id"], []).append(r)
    metric, images, crowd_rles = InstanceMetrics(), [], 0
    for sample in ShardDataset(root=tiny_inst["shards"], split="train"):
        ann, (h, w) = sample["ann"], sample["image"].shape[:2]
        rles, problems = instance_rles(ann, height=h, width=w)
        assert problems == [None] * len(rles), f"{sample['key']}: {problems}"
        crowd_rles += sum(1 for r in ann.get("rle") or [] if r is not None)
        boxes = torch.tensor(ann["boxes"], dtype=torch.float32).reshape(-1, 4)
        target = {"boxes": boxes, "labels": torch.tensor(ann["classes"]).long(),
                  "masks": torch.from_numpy(decode_rles(rles, height=h, width=w)),
                  "iscrowd": torch.tensor(ann["iscrowd"]).long(), "area": torch.tensor(ann["area"]).float()}
        mine = by_image.get(ann["image_id"], [])
        xywh = np.asarray([r["bbox"] for r in mine], np.float64).reshape(-1, 4)
        pred = {"boxes": torch.from_numpy(np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)).float(),
                "scores": torch.tensor([r["score"] for r in mine]).float(),
                "labels": torch.tensor([label_of[r["category_id"]] for r in mine]).long(),
                "masks": torch.from_numpy(decode_rles([r["segmentation"] for r in mine], height=h, width=w))}
        metric.update([pred], [target])
        images.append({"image_id": ann["image_id"], "boxes": pred["boxes"].numpy(), "scores": pred["scores"].numpy(),
                       "labels": pred["labels"].numpy(), "rles": [r["segmentation"] for r in mine]})
    assert crowd_rles >= 3  # the crowd regions reached the shards as RLEs
    ours = metric.compute()
    for t in ("segm", "bbox"):
        got = np.asarray([ours[f"{t}_{k}"] for k in STAT_NAMES])
        pairs = dict(zip(STAT_NAMES, zip(got, theirs[t], strict=True), strict=True))
        assert np.abs(got - theirs[t]).max() < 1e-4, (t, pairs)
    assert 0.1 < theirs["segm"][0] < 0.9 and theirs["segm"][1] > 0.3  # neither perfect nor hopeless

    segm, bbox = instance_results(images, category_ids=meta.class_ids)
    assert len(segm) == len(bbox) == len(results)
    assert all(set(r) == {"image_id", "category_id", "segmentation", "score"} for r in segm)
    assert all(set(r) == {"image_id", "category_id", "bbox", "score"} for r in bbox)
    for t, records in (("segm", segm), ("bbox", bbox)):
        written = tmp_path / f"{t}.json"
        written.write_text(json.dumps(records))
        again = COCOeval(gt, gt.loadRes(str(written)), t)
        again.evaluate()
        again.accumulate()
        again.summarize()
        assert np.abs(np.asarray(again.stats) - theirs[t]).max() < 1e-4, t
