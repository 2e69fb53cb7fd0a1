"""Detection metrics: VOC AP on hand-built cases, COCO parity with pycocotools on real data, table, plot."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from objmtl.data import ShardDataset, read_meta
from objmtl.metrics import COCO_KEYS, DetectionMetrics, target_from_ann, voc_ap
from objmtl.runs.det_outputs import coco_results
from tests.helpers import run_cli

A, B, C, D, FAR = [0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10], [60, 0, 70, 10], [100, 100, 110, 110]


def _voc(dets: list[tuple[list[float], float]], gts: list[list[float]], *, difficult: list[int] | None = None,
         iscrowd: list[int] | None = None) -> dict:
    metric = DetectionMetrics()
    pred = {"boxes": torch.tensor([b for b, _ in dets], dtype=torch.float32).reshape(-1, 4),
            "scores": torch.tensor([s for _, s in dets]), "labels": torch.zeros(len(dets), dtype=torch.long)}
    target = {"boxes": torch.tensor(gts, dtype=torch.float32),
              "labels": torch.zeros(len(gts), dtype=torch.long)}
    if difficult is not None:
        target["difficult"] = torch.tensor(difficult)
    if iscrowd is not None:
        target["iscrowd"] = torch.tensor(iscrowd)
    metric.update([pred], [target])
    return metric.compute()


def test_voc_ap_all_point() -> None:
    # TP FP TP FP TP: recall 1/3 1/3 2/3 2/3 1, precision 1 1/2 2/3 1/2 3/5 -> 1/3 (1 + 2/3 + 3/5) = 34/45
    dets = [(A, 0.9), (FAR, 0.8), (B, 0.7), (FAR, 0.6), (C, 0.5)]
    out = _voc(dets, [A, B, C])
    assert out["voc_map"] == pytest.approx(34 / 45) and out["voc_recall"] == pytest.approx(1.0)
    assert voc_ap(recall=np.array([1 / 3, 1 / 3, 2 / 3, 2 / 3, 1]),
                  precision=np.array([1, 1 / 2, 2 / 3, 1 / 2, 3 / 5])) == pytest.approx(34 / 45)
    # without the last TP: 1/3 * 1 + 1/3 * 2/3
    assert _voc(dets[:4], [A, B, C])["voc_ap_per_class"] == pytest.approx([5 / 9])


def test_voc_difficult_and_crowd_ignored() -> None:
    dets = [(A, 0.9), (FAR, 0.8), (B, 0.7), (FAR, 0.6), (C, 0.5)]
    missed = _voc(dets, [A, B, C, D], difficult=[0, 0, 0, 1])  # the difficult gt missed: no lower AP
    assert missed["voc_map"] == pytest.approx(34 / 45) and missed["voc_recall"] == pytest.approx(1.0)
    found = _voc([*dets, (D, 0.85)], [A, B, C, D], difficult=[0, 0, 0, 1])  # neither TP nor FP
    assert found["voc_map"] == pytest.approx(34 / 45)
    crowd = _voc([*dets, (D, 0.85)], [A, B, C, D], iscrowd=[0, 0, 0, 1])
    assert crowd["voc_map"] == pytest.approx(34 / 45)
    counted = _voc([*dets, (D, 0.85)], [A, B, C, D])  # as a normal gt it is a TP and changes AP
    assert counted["voc_map"] != pytest.approx(34 / 45)


def test_voc_duplicate_is_fp() -> None:
    # TP (A) FP (A again) TP (B): recall 1/3 1/3 2/3, precision 1 1/2 2/3 -> 5/9
    out = _voc([(A, 0.9), ([0.5, 0, 10.5, 10], 0.8), (B, 0.7)], [A, B, C])
    assert out["voc_map"] == pytest.approx(5 / 9) and out["voc_recall"] == pytest.approx(2 / 3)


def test_coco_keys_perfect_and_outputs(tmp_path: Path) -> None:
    metric = DetectionMetrics()
    boxes = torch.tensor([A, [0, 20, 60, 90], [0, 0, 120, 150]], dtype=torch.float32)
    labels = torch.tensor([0, 1, 1])
    for _ in range(3):
        metric.update([{"boxes": boxes, "scores": torch.tensor([0.9, 0.8, 0.7]), "labels": labels}],
                      [{"boxes": boxes, "labels": labels}])
    out = metric.compute()
    assert set(COCO_KEYS) <= set(out) and all(isinstance(out[k], float) for k in COCO_KEYS)
    assert out["map"] == pytest.approx(1.0) and out["voc_map"] == pytest.approx(1.0)
    assert out["map_per_class"] == pytest.approx([1.0, 1.0])
    rows = metric.per_class_table(class_names=["a", "b", "c"])
    assert [(r["class"], r["gts"]) for r in rows] == [("a", 3), ("b", 6)]
    png = metric.plot_pr_curves(out_png=tmp_path / "pr.png", class_names=["a", "b", "c"])
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"


def _predictions(raw: dict, seed: int = 0) -> dict[int, list[tuple[list[float], int, float]]]:
    """Per COCO image id: (xywh box, COCO category id, score) made from the gts, with misses and FPs."""
    rng = np.random.default_rng(seed)
    sizes = {im["id"]: (im["width"], im["height"]) for im in raw["images"]}
    cats = sorted(c["id"] for c in raw["categories"])
    out: dict[int, list] = {iid: [] for iid in sizes}

    def add(iid: int, box: np.ndarray, cat: int) -> None:
        box = np.round(np.asarray(box, dtype=np.float64) * 64) / 64  # exact in float32 (torchmetrics' dtype)
        out[iid].append((box.tolist(), cat, float(np.round(rng.uniform(0.01, 1.0), 6))))

    for a in raw["annotations"]:
        x, y, w, h = a["bbox"]
        if a["iscrowd"]:  # a few detections inside the crowd region: ignored, not FPs
            for _ in range(2):
                bw, bh = w * rng.uniform(0.1, 0.3), h * rng.uniform(0.3, 0.8)
                add(a["image_id"], [x + rng.uniform(0, w - bw), y + rng.uniform(0, h - bh), bw, bh],
                    a["category_id"])
            continue
        if rng.random() < 0.1:
            continue
        j = rng.normal(0, 0.04, 4)
        add(a["image_id"], [x + j[0] * w, y + j[1] * h, max(w * (1 + j[2]), 1), max(h * (1 + j[3]), 1)],
            a["category_id"])
    for iid, (wi, hi) in sizes.items():
        for lo, hi_side in ((4, 30), (34, 94), (100, 300)):  # small, medium, large false positives
            for _ in range(int(rng.integers(0, 3))):
                bw, bh = rng.uniform(lo, hi_side, 2)
                bw, bh = min(bw, wi - 1), min(bh, hi - 1)
                add(iid, [rng.uniform(0, wi - bw), rng.uniform(0, hi - bh), bw, bh], int(rng.choice(cats)))
    return out


def _pycocotools(ann_file: Path, preds: dict[int, list] | list[dict], out_dir: Path) -> list[float]:
    """pycocotools' 9 bbox figures for predictions per image id, or for ready COCO result records."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    results = preds if isinstance(preds, list) else [
        {"image_id": iid, "category_id": cat, "bbox": box, "score": score}
        for iid, dets in preds.items() for box, cat, score in dets]
    (out_dir / "results.json").write_text(json.dumps(results))
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann_file))
        evaluator = COCOeval(gt, gt.loadRes(str(out_dir / "results.json")), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return [float(v) for v in evaluator.stats[:9]]  # AP AP50 AP75 APs APm APl AR1 AR10 AR100


@pytest.mark.realdata
def test_coco_parity_with_pycocotools(real_data: Path, tmp_path: Path) -> None:
    tiny = real_data / "pose" / "tiny_coco"
    ann_file = tiny / "annotations" / "instances_train2017.json"
    raw = json.loads(ann_file.read_text())
    out = tmp_path / "shards"
    proc = run_cli("objmtl-data", "convert", "--workers", "1", "--format", "coco", "--src", str(tiny),
                   "--out", str(out), "--images", "train2017", "--ann", f"train={ann_file}",
                   "--val-fraction", "0")
    assert proc.returncode == 0, proc.stderr[-2000:]
    preds = _predictions(raw)
    theirs = _pycocotools(ann_file, preds, tmp_path)

    label_of = {cid: i for i, cid in enumerate(sorted(c["id"] for c in raw["categories"]))}
    assert read_meta(out).class_ids == sorted(label_of)  # the source's category ids, by class index
    metric = DetectionMetrics()
    samples = list(ShardDataset(root=out, split="train"))
    assert len(samples) == len(raw["images"]) == read_meta(out).count("train")
    for s in samples:
        dets = preds[s["ann"]["image_id"]]
        boxes = torch.tensor([[x, y, x + w, y + h] for (x, y, w, h), _, _ in dets], dtype=torch.float32)
        metric.update([{"boxes": boxes.reshape(-1, 4), "scores": torch.tensor([d[2] for d in dets]),
                        "labels": torch.tensor([label_of[d[1]] for d in dets], dtype=torch.long)}],
                      [target_from_ann(s["ann"])])
    result = metric.compute()
    mine = [result[k] for k in COCO_KEYS]
    print("pycocotools", np.round(theirs, 6).tolist(), "\nobjmtl     ", np.round(mine, 6).tolist())
    assert min(theirs[3:6]) > 0.1  # small, medium and large all have gts and matches
    np.testing.assert_allclose(mine, theirs, atol=1e-4, rtol=0)
    assert 0 < result["voc_map"] <= 1 and 0.8 < result["voc_recall"] < 1
    names = read_meta(out).classes
    rows = metric.per_class_table(class_names=names)
    assert {r["class"] for r in rows} == {names[label_of[a["category_id"]]] for a in raw["annotations"]
                                          if not a["iscrowd"]}
    assert sum(r["gts"] for r in rows) == sum(1 - a["iscrowd"] for a in raw["annotations"])
    png = metric.plot_pr_curves(out_png=tmp_path / "pr.png", class_names=names)
    assert png.stat().st_size > 1000

    # objmtl-test --out's results json, with the ids taken back to COCO's, scores as the source's own
    images = [{"image_id": iid, "boxes": np.array([[x, y, x + w, y + h] for (x, y, w, h), _, _ in dets]).reshape(-1, 4),
               "scores": np.array([d[2] for d in dets]), "labels": np.array([label_of[d[1]] for d in dets])}
              for iid, dets in preds.items()]
    records = coco_results(images, category_ids=read_meta(out).class_ids)
    np.testing.assert_allclose(_pycocotools(ann_file, records, tmp_path), theirs, atol=1e-4, rtol=0)
