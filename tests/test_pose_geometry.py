"""Top-down geometry: crop round trips, sub-pixel heatmap decoding, the flip test's mirror and pair swap."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from objmtl.data.pose_samples import TopDownCrop
from objmtl.models.pose import (
    affine_matrix,
    apply_affine,
    box_to_region,
    decode_heatmaps,
    flip_heatmaps,
    gaussian_targets,
    invert_affine,
    to_heatmap,
)
from objmtl.tasks.pose import keypoints_to_original

torch.set_num_threads(2)


def test_box_region_keeps_the_box_and_takes_the_input_aspect() -> None:
    center, size = box_to_region([10, 20, 110, 60], aspect=192 / 256, padding=1.25)  # a wide box
    assert np.allclose(center, [60, 40])
    assert np.isclose(size[0] / size[1], 0.75) and np.isclose(size[0], 100 * 1.25)
    center, size = box_to_region([0, 0, 30, 200], aspect=0.75, padding=1.0)  # a tall box
    assert np.allclose(size, [150, 200])


@pytest.mark.parametrize(("rotation", "flip"), [(0.0, False), (33.0, False), (-71.0, True), (180.0, True)])
def test_a_keypoint_mapped_into_the_crop_and_back_lands_within_half_a_pixel(rotation: float, flip: bool) -> None:
    rng = np.random.default_rng(0)
    box = np.array([120.3, 40.7, 260.9, 390.2])
    center, size = box_to_region(box, aspect=48 / 64, padding=1.25)
    m = affine_matrix(center=center, size=size * 1.2, output_size=(48, 64), rotation=rotation, flip=flip)
    points = rng.uniform(box[:2], box[2:], size=(50, 2))
    in_crop = apply_affine(points, m)
    back = apply_affine(in_crop, invert_affine(m))
    assert np.abs(back - points).max() < 0.5
    # through the heatmap grid and the task's float path, as evaluation decodes
    cells = torch.from_numpy(to_heatmap(in_crop, 4)).float()[None]
    inv = torch.from_numpy(invert_affine(m))[None]
    restored = keypoints_to_original(cells, inv, stride=4)[0].numpy()
    assert np.abs(restored - points).max() < 0.5


def test_the_crop_pixels_follow_the_affine_map() -> None:
    image = np.zeros((100, 120, 3), np.uint8)
    image[30, 70] = 255  # one bright pixel
    kps = np.array([[70.0, 30.0, 2.0]])
    crop = TopDownCrop(input_size=(64, 48), num_keypoints=1, heatmap_stride=4)
    out = crop(image, np.array([40.0, 10.0, 100.0, 90.0]), kps)
    where = np.unravel_index(int(out["crop"][0].argmax()), out["crop"].shape[1:])
    forward = apply_affine(np.array([70.0, 30.0]), invert_affine(out["inv_affine"].numpy()))
    assert np.abs(np.array(where[::-1]) - forward).max() <= 1.0
    hm_peak = np.unravel_index(int(out["heatmaps"][0].argmax()), out["heatmaps"].shape[1:])
    assert np.abs(np.array(hm_peak[::-1]) - to_heatmap(forward, 4)).max() <= 0.5


@pytest.mark.parametrize("method,tolerance", [("dark", 0.1), ("quarter", 0.26)])
def test_encode_then_decode_recovers_a_sub_pixel_location(method: str, tolerance: float) -> None:
    rng = np.random.default_rng(1)
    points = rng.uniform([4, 4], [44, 60], size=(6, 3, 2))  # (P, K, 2) heatmap cells, away from the border
    heatmaps, weights = gaussian_targets(points, np.ones((6, 3), bool), size=(64, 48), sigma=2.0)
    assert weights.min() == 1
    coords, maxvals = decode_heatmaps(torch.from_numpy(heatmaps), method=method)
    err = np.abs(coords.numpy() - points)
    assert err.max() < tolerance, err.max()
    assert torch.all(maxvals > 0.8)
    argmax, _ = decode_heatmaps(torch.from_numpy(heatmaps), method="argmax")
    if method == "dark":  # the sub-pixel step is what brings it there: plain arg-max is off by up to half a cell
        assert np.abs(argmax.numpy() - points).max() > 0.2


def test_unlabelled_and_off_map_keypoints_get_no_weight_and_no_target() -> None:
    points = np.array([[[10.0, 10.0], [10.0, 10.0], [-5.0, 3.0]]])
    heatmaps, weights = gaussian_targets(points, np.array([[True, False, True]]), size=(16, 12), sigma=2.0)
    assert weights.tolist() == [[1.0, 0.0, 0.0]]
    assert heatmaps[0, 1].max() == 0 and heatmaps[0, 2].max() == 0 and heatmaps[0, 0].max() > 0.9


def test_flip_heatmaps_mirrors_the_width_and_swaps_the_pairs() -> None:
    hm = torch.zeros(1, 4, 8, 6)
    hm[0, 1, 2, 0] = 1.0  # "right" keypoint at the left edge
    hm[0, 0, 5, 4] = 0.5
    out = flip_heatmaps(hm, [[1, 3]])
    assert out[0, 3, 2, 5] == 1.0 and out[0, 1].sum() == 0  # moved to the mirrored column, under its pair's name
    assert out[0, 0, 5, 1] == 0.5  # unpaired: mirrored only
    assert torch.equal(flip_heatmaps(out, [[1, 3]]), hm)


def test_a_mirrored_crop_has_the_mirrored_targets_with_pairs_swapped() -> None:
    """Flip-test consistency: flip_heatmaps of the mirrored crop's targets are the plain crop's targets."""
    rng = np.random.default_rng(2)
    image = rng.integers(0, 255, (90, 110, 3), dtype=np.uint8)
    box = np.array([20.0, 15.0, 80.0, 85.0])
    kps = np.column_stack([rng.uniform(25, 75, 4), rng.uniform(20, 80, 4), [2, 2, 1, 2]])
    kw = {"input_size": (256, 192), "num_keypoints": 4, "flip_pairs": [[1, 3]], "train": True}
    plain = TopDownCrop(**kw, flip_prob=0.0)(image, box, kps)
    mirrored = TopDownCrop(**kw, flip_prob=1.0)(image, box, kps)
    assert torch.allclose(mirrored["crop"], plain["crop"].flip(-1), atol=1e-6)
    back = flip_heatmaps(mirrored["heatmaps"][None], [[1, 3]])[0]
    assert torch.allclose(back, plain["heatmaps"], atol=1e-5)
    assert torch.equal(mirrored["weights"][[0, 3, 2, 1]], plain["weights"])
    # decoding the mirrored crop's own targets and mapping back through its (mirroring) inverse affine
    coords, _ = decode_heatmaps(mirrored["heatmaps"][None])
    restored = keypoints_to_original(coords, mirrored["inv_affine"][None], stride=4)[0].numpy()
    assert np.abs(restored[[0, 3, 2, 1]] - kps[:, :2]).max() < 0.5


def test_half_body_crops_zoom_on_the_upper_or_lower_body() -> None:
    rng = np.random.default_rng(3)
    image = rng.integers(0, 255, (300, 200, 3), dtype=np.uint8)
    box = np.array([50.0, 20.0, 150.0, 280.0])
    kps = np.column_stack([rng.uniform(60, 140, 17), np.linspace(30, 270, 17), np.full(17, 2.0)])  # head to ankles
    kw = {"input_size": (64, 48), "num_keypoints": 17, "train": True}
    full = TopDownCrop(**kw)(image, box, kps)
    crop = TopDownCrop(**kw, half_body_prob=1.0)
    crop.reseed(0)
    for _ in range(8):
        half = crop(image, box, kps)
        # a smaller region (fewer source pixels per crop pixel) that leaves the other half off the crop
        assert abs(float(half["inv_affine"][0, 0])) < 0.8 * abs(float(full["inv_affine"][0, 0]))
        assert half["weights"].sum() < 17
    few = kps.copy()
    few[2:, 2] = 0  # fewer labelled keypoints than half_body_min_keypoints: the whole box
    assert torch.allclose(crop(image, box, few)["inv_affine"], full["inv_affine"])
