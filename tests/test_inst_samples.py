"""Instance samples: each mask moves with its box, bad outlines and masks cut away are counted, batches."""

from __future__ import annotations

from typing import Any

import albumentations as A
import numpy as np
import pytest
import torch

from objmtl.data.det_samples import LABEL_FIELDS
from objmtl.data.inst_samples import InstanceSamples
from objmtl.data.instance_masks import encode_masks, instance_rles
from objmtl.errors import UserError


def _bp(**kw: Any) -> A.BboxParams:
    return A.BboxParams(format="pascal_voc", label_fields=list(LABEL_FIELDS), clip=True,
                        filter_invalid_bboxes=True, **kw)


def _square(x: float, y: float, side: float) -> list[float]:
    return [x, y, x + side, y, x + side, y + side, x, y + side]


def _sample() -> dict[str, Any]:
    """A 60 x 80 image with a square (class 0), a triangle (class 1) and a crowd region given as an RLE."""
    crowd = np.zeros((1, 60, 80), np.uint8)
    crowd[0, 40:56, 60:76] = 1
    ann = {"boxes": [[10, 10, 30, 30], [40, 5, 70, 35], [60, 40, 76, 56]], "classes": [0, 1, 1],
           "iscrowd": [0, 0, 1], "area": [400.0, 450.0, 256.0],
           "polygons": [[_square(10, 10, 20)], [[40, 5, 70, 5, 40, 35]], []],
           "rle": [None, None, encode_masks(crowd)[0]]}
    image = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    return {"key": "000000003", "image": image, "ann": ann}


def test_a_flip_moves_each_mask_with_its_box_class_and_crowd_flag() -> None:
    plain = InstanceSamples(transform=A.Compose([A.NoOp()], bbox_params=_bp()))(_sample())
    flipped = InstanceSamples(transform=A.Compose([A.HorizontalFlip(p=1)], bbox_params=_bp()))(_sample())
    assert plain["masks"].shape == (3, 60, 80) and plain["masks"].dtype == torch.uint8
    assert plain["dropped_boxes"] == plain["dropped_masks"] == 0
    assert plain["labels"].tolist() == flipped["labels"].tolist() == [0, 1, 1]
    assert plain["iscrowd"].tolist() == flipped["iscrowd"].tolist() == [False, False, True]
    assert torch.equal(flipped["masks"], plain["masks"].flip(-1))
    for box, mask in zip(flipped["boxes"], flipped["masks"], strict=True):  # each mask lies in its own box
        ys, xs = torch.nonzero(mask, as_tuple=True)
        assert box[0] - 1 <= xs.min() and xs.max() <= box[2] and box[1] - 1 <= ys.min() and ys.max() <= box[3]
    assert int(plain["masks"][0].sum()) == 400 and int(plain["masks"][2].sum()) == 256
    assert [r["size"] for r in plain["rles"]] == [[60, 80]] * 3  # the source outlines, for evaluation


def test_a_crop_that_cuts_a_mask_away_drops_it_with_its_box_and_counts_it() -> None:
    crop = A.Compose([A.Crop(x_min=0, y_min=0, x_max=38, y_max=60)], bbox_params=_bp())
    out = InstanceSamples(transform=crop)(_sample())
    assert out["labels"].tolist() == [0] and out["masks"].shape == (1, 60, 38)
    assert out["dropped_boxes"] == 2 and len(out["rles"]) == 1
    # a box that survives the crop while its mask does not (the triangle's empty corner) goes too
    corner = A.Compose([A.Crop(x_min=62, y_min=20, x_max=80, y_max=38)], bbox_params=_bp(min_visibility=0.0))
    sample = _sample()
    out = InstanceSamples(transform=corner)(sample)
    box_kept = A.Compose([A.Crop(x_min=62, y_min=20, x_max=80, y_max=38)], bbox_params=_bp(min_visibility=0.0))(
        image=sample["image"], bboxes=np.asarray(sample["ann"]["boxes"], float), labels=[0, 1, 1],
        iscrowd=[0, 0, 1], area=[1.0, 1.0, 1.0])
    assert len(box_kept["bboxes"]) == 1 and out["labels"].numel() == 0 and out["dropped_boxes"] == 3


@pytest.mark.parametrize(("change", "reason"), [
    ({"polygons": [[[10, 10, 30, 10]], [[40, 5, 70, 5, 40, 35]], []]}, "ring < 3 points"),
    ({"polygons": [[[10, 10, 20, 10, 30, 10]], [[40, 5, 70, 5, 40, 35]], []]}, "zero area"),
    ({"polygons": [[], [[40, 5, 70, 5, 40, 35]], []]}, "no outline"),
])
def test_an_outline_that_is_no_mask_is_counted_not_raised(change: dict, reason: str) -> None:
    sample = _sample()
    sample["ann"].update(change)
    _, problems = instance_rles(sample["ann"], height=60, width=80)
    assert problems == [reason, None, None]
    out = InstanceSamples(transform=A.Compose([A.NoOp()], bbox_params=_bp()))(sample)
    assert out["labels"].tolist() == [1, 1] and out["dropped_masks"] == out["dropped_boxes"] == 1


def test_an_rle_of_another_size_is_counted() -> None:
    sample = _sample()
    sample["ann"]["rle"][2] = encode_masks(np.ones((1, 61, 80), np.uint8))[0]
    assert instance_rles(sample["ann"], height=60, width=80)[1][2] == "rle size"
    out = InstanceSamples(transform=None)(sample)
    assert out["labels"].tolist() == [0, 1] and out["dropped_masks"] == 1


def test_batches_keep_masks_per_image_and_the_pipeline_must_carry_boxes() -> None:
    adapter = InstanceSamples(transform=A.Compose([A.LongestMaxSize(max_size=40)], bbox_params=_bp()))
    bad = _sample()
    bad["ann"]["polygons"][0] = [[10, 10, 30, 10]]  # two points: no mask
    items = [adapter(_sample()), adapter({**_sample(), "ann": {"boxes": [], "classes": []}}), adapter(bad)]
    batch = InstanceSamples.collate(items)
    assert batch["images"].shape == (3, 3, 32, 64)
    assert [t["masks"].shape for t in batch["targets"]] == [(3, 30, 40), (0, 30, 40), (2, 30, 40)]
    assert [len(t["rles"]) for t in batch["targets"]] == [3, 0, 2]
    assert batch["dropped_boxes"] == batch["dropped_masks"] == 1  # what task=inst logs per epoch
    with pytest.raises(UserError, match="task=inst needs .* data=inst"):
        InstanceSamples(transform=A.Compose([A.NoOp()]))


def test_browse_paints_each_instance_mask_in_its_own_colour() -> None:
    from objmtl.data.browse import sample_panels
    from objmtl.data.schema import Meta
    from objmtl.viz.draw import instance_colors

    sample = _sample()
    image = np.full((60, 80, 3), 100, np.uint8)
    (panel,) = sample_panels(image, sample["ann"], None, meta=Meta(classes=["square", "triangle"], tasks=["inst"]),
                             min_side=240)  # enlarged 4x
    colors = np.asarray(instance_colors(3), np.float64)
    for i, (y, x) in enumerate([(100, 80), (100, 170), (210, 280)]):  # in the square, the triangle, the crowd RLE
        want = np.rint(0.5 * 100 + 0.5 * colors[i])
        assert np.abs(panel[y, x].astype(np.float64) - want).max() <= 1, (i, panel[y, x], want)
    assert panel.shape == (240, 320, 3) and (panel[200, 40] == 100).all()  # outside every instance
