"""mIoU, pixel accuracy and per-class IoU on a hand-computed case, and parity with torchmetrics' JaccardIndex."""

from __future__ import annotations

import math

import pytest
import torch
from torchmetrics.classification import MulticlassJaccardIndex

from objmtl.metrics.segmentation import SegmentationMetrics

torch.set_num_threads(2)

# 4 classes. Two ignore pixels (255, the last column: the prediction there is not scored); class 2 is
# predicted once but never in the ground truth; class 3 is in neither.
TARGET = torch.tensor([[0, 0, 1, 255],
                       [1, 1, 0, 255]])
PRED = torch.tensor([[0, 2, 1, 1],
                     [1, 0, 0, 2]])
# scored pixels: (t0,p0) (t0,p2) (t1,p1) | (t1,p1) (t1,p0) (t0,p0)
#   class 0: TP 2, FN 1 (predicted 2), FP 1 (a 1 predicted 0) -> IoU 2/4
#   class 1: TP 2, FN 1, FP 0 (its prediction on an ignore pixel does not count) -> IoU 2/3
#   class 2: TP 0, FP 1, FN 0 -> IoU 0, and it counts in the mean
#   class 3: no pixel in either -> no IoU, left out of the mean
IOU = [0.5, 2 / 3, 0.0, None]
MIOU = (0.5 + 2 / 3 + 0.0) / 3
PIXEL_ACC = 4 / 6
MACC = (2 / 3 + 2 / 3) / 2  # over the classes in the ground truth


def test_hand_computed_case() -> None:
    metric = SegmentationMetrics(num_classes=4)
    metric.update(PRED, TARGET)
    result = metric.compute()
    assert float(result["miou"]) == pytest.approx(MIOU)
    assert float(result["pixel_acc"]) == pytest.approx(PIXEL_ACC)
    assert float(result["macc"]) == pytest.approx(MACC)
    rows = SegmentationMetrics.per_class_table(result, class_names=["bg", "a", "b", "c"])
    assert [r["class"] for r in rows] == ["bg", "a", "b", "c"]
    for row, expected in zip(rows, IOU, strict=True):
        assert row["iou"] == (None if expected is None else pytest.approx(expected, abs=1e-6))
    assert [r["gt_pixels"] for r in rows] == [3, 3, 0, 0]
    assert [r["pred_pixels"] for r in rows] == [3, 2, 1, 0]
    assert rows[2]["acc"] is None and rows[3]["acc"] is None


def test_agrees_with_torchmetrics_macro_jaccard_on_random_maps() -> None:
    g = torch.Generator().manual_seed(0)
    ours = SegmentationMetrics(num_classes=7)
    theirs = MulticlassJaccardIndex(num_classes=7, average="macro", ignore_index=255)
    per_class = MulticlassJaccardIndex(num_classes=7, average="none", ignore_index=255)
    for _ in range(3):
        target = torch.randint(0, 5, (2, 9, 11), generator=g)  # classes 5 and 6 never in the ground truth
        target[torch.rand(target.shape, generator=g) < 0.2] = 255
        pred = torch.randint(0, 6, (2, 9, 11), generator=g)  # class 6 in neither
        ours.update(pred, target)
        theirs.update(pred, target)
        per_class.update(pred, target)
    result = ours.compute()
    assert float(result["miou"]) == pytest.approx(float(theirs.compute()), abs=1e-6)
    expected = per_class.compute()
    assert torch.allclose(result["iou"][:6], expected[:6], atol=1e-6)
    assert math.isnan(float(result["iou"][6]))


def test_batches_accumulate_and_reset() -> None:
    whole = SegmentationMetrics(num_classes=4)
    whole.update(PRED, TARGET)
    split = SegmentationMetrics(num_classes=4)
    split.update(PRED[:1], TARGET[:1])
    split.update(PRED[1:], TARGET[1:])
    assert float(split.compute()["miou"]) == pytest.approx(float(whole.compute()["miou"]))
    split.reset()
    split.update(TARGET.clamp(max=3), TARGET)  # perfect where labelled
    assert float(split.compute()["miou"]) == pytest.approx(1.0)


def test_nothing_labelled_is_nan_not_a_crash() -> None:
    metric = SegmentationMetrics(num_classes=3)
    metric.update(torch.zeros(4, 4, dtype=torch.long), torch.full((4, 4), 255))
    result = metric.compute()
    assert math.isnan(float(result["miou"])) and math.isnan(float(result["pixel_acc"]))
