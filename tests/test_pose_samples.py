"""PoseSamples: one image -> all its person crops; batches of a varying number of persons; bad input counted."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from objmtl.data.pose_samples import PoseSamples, TopDownCrop
from objmtl.errors import UserError
from objmtl.models import build_backbone
from objmtl.models.pose import SimpleBaseline

torch.set_num_threads(2)

K = 4


def _sample(boxes: list, keypoints: list, iscrowd: list | None = None, key: str = "000001") -> dict:
    n = len(boxes)
    ann = {"image_id": 7, "boxes": boxes, "classes": [1] * n, "iscrowd": iscrowd or [0] * n,
           "area": [100.0] * n, "keypoints": keypoints}
    return {"key": key, "image": np.full((80, 100, 3), 90, np.uint8), "ann": ann, "mask": None}


def _kps(x: float, y: float, v: int = 2) -> list:
    return [[x, y, v], [x + 5, y + 5, v], [x, y + 10, v], [x - 5, y + 5, v]]


def _crop(**kw) -> TopDownCrop:
    return TopDownCrop(input_size=(64, 48), num_keypoints=K, **kw)


def test_an_image_gives_all_its_persons_and_its_full_ground_truth() -> None:
    sample = _sample([[10, 10, 40, 60], [50, 5, 90, 70], [0, 0, 100, 80]], [_kps(20, 20), _kps(60, 20), _kps(0, 0, 0)],
                     iscrowd=[0, 0, 1])
    out = PoseSamples(transform=_crop())(sample)
    assert out["crops"].shape == (2, 3, 64, 48) and out["heatmaps"].shape == (2, K, 16, 12)
    assert out["gt_index"].tolist() == [0, 1] and out["labels"].tolist() == [1, 1]
    assert out["inv_affine"].shape == (2, 2, 3) and out["inv_affine"].dtype == torch.float64
    gt = out["image"]["gt"]
    assert gt["keypoints"].shape == (3, K, 3) and gt["iscrowd"].tolist() == [False, False, True]
    assert out["image"]["image_id"] == 7 and out["image"]["orig_size"] == (80, 100)
    assert out["dropped"] == {"zero_size_box": 0, "bad_keypoints": 0}


def test_training_skips_crowd_and_unlabelled_persons_and_caps_the_count() -> None:
    boxes = [[i * 10, 5, i * 10 + 9, 60] for i in range(10)]
    kps = [_kps(i * 10 + 4, 20) for i in range(9)] + [_kps(95, 20, 0)]  # the last has no labelled keypoint
    sample = _sample(boxes, kps, iscrowd=[1] + [0] * 9)
    train = PoseSamples(transform=_crop(train=True, max_persons=5))
    out = train(sample)
    assert len(out["crops"]) == 5
    assert set(out["gt_index"].tolist()) <= set(range(1, 9))
    evaluation = PoseSamples(transform=_crop())(sample)
    assert evaluation["gt_index"].tolist() == list(range(1, 10))  # every non-crowd box


def test_bad_keypoints_and_zero_size_boxes_are_counted_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    sample = _sample([[10, 10, 40, 60], [50, 50, 50, 70], [60, 5, 90, 40]],
                     [_kps(20, 20), _kps(50, 55), _kps(70, 10)[:3]])  # a zero-width box; 3 keypoints for 4
    sample["ann"]["boxes"].append([10, 10, 30, 30])
    sample["ann"]["keypoints"].append([[1, 2, 2], [1, 2]])  # ragged
    for key in ("classes", "iscrowd", "area"):
        sample["ann"][key].append(sample["ann"][key][0])
    with caplog.at_level(logging.WARNING):
        out = PoseSamples(transform=_crop(train=True))(sample)
    assert out["dropped"] == {"zero_size_box": 1, "bad_keypoints": 2}
    assert out["gt_index"].tolist() == [0]
    assert "instance 2 has keypoints of shape (3, 3), not (4, 3)" in caplog.text
    assert len(out["image"]["gt"]["boxes"]) == 2  # the zero-size person stays a ground-truth person


def test_a_keypoint_count_that_does_not_match_the_boxes_is_a_clear_error() -> None:
    sample = _sample([[10, 10, 40, 60], [50, 5, 90, 70]], [_kps(20, 20)])
    with pytest.raises(UserError, match="sample 000001: 1 keypoint arrays for 2 boxes"):
        PoseSamples(transform=_crop())(sample)


def test_a_transform_that_is_not_a_person_crop_is_refused() -> None:
    import albumentations as A

    with pytest.raises(UserError, match="task=pose needs objmtl.data.pose_samples.TopDownCrop"):
        PoseSamples(transform=A.Compose([A.HorizontalFlip()]))


def test_collate_concatenates_persons_and_allows_none() -> None:
    adapter = PoseSamples(transform=_crop())
    items = [adapter(_sample([[10, 10, 40, 60]], [_kps(20, 20)])), adapter(_sample([], [])),
             adapter(_sample([[10, 10, 40, 60], [50, 5, 90, 70]], [_kps(20, 20), _kps(60, 20)]))]
    batch = PoseSamples.collate(items)
    assert batch["crops"].shape == (3, 3, 64, 48) and batch["person_image"].tolist() == [0, 2, 2]
    assert len(batch["images"]) == 3 and batch["dropped"] == {"zero_size_box": 0, "bad_keypoints": 0}
    empty = PoseSamples.collate([adapter(_sample([], []))])
    assert empty["crops"].shape == (0, 3, 64, 48) and empty["heatmaps"].shape == (0, K, 16, 12)


def test_a_batch_without_persons_trains_on_a_zero_loss_that_has_a_grad() -> None:
    from objmtl.tasks.pose import PoseTask

    model = SimpleBaseline(backbone=build_backbone(name="resnet18", out_indices=[3]), num_keypoints=K,
                           deconv_channels=(32, 32, 32))
    task = PoseTask(model=model, keypoint_names=["a", "b", "c", "d"], flip_pairs=[[1, 3]], sigmas=[0.05] * K)
    task.log = lambda *a, **k: None  # no trainer attached
    batch = PoseSamples.collate([PoseSamples(transform=_crop(train=True))(_sample([], []))])
    loss = task.training_step(batch, 0)
    assert float(loss.detach()) == 0.0 and loss.requires_grad
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_unknown_sigmas_for_a_non_coco_skeleton_are_a_clear_error() -> None:
    from objmtl.metrics.keypoints import COCO_SIGMAS, oks_sigmas

    assert oks_sigmas(num_keypoints=17) == list(COCO_SIGMAS)
    assert oks_sigmas(num_keypoints=2, sigmas=[0.1, 0.2]) == [0.1, 0.2]
    with pytest.raises(UserError, match="meta.json keypoints.sigmas: 0 sigmas for 5 keypoints"):
        oks_sigmas(num_keypoints=5, sigmas=[])


def test_a_crop_size_off_the_heatmap_grid_is_a_clear_error() -> None:
    with pytest.raises(UserError, match=r"data.image_size \[66, 48\]: both sides must be multiples of the heatmap"):
        PoseSamples(transform=TopDownCrop(input_size=(66, 48), num_keypoints=K))
