"""Segmentation samples: masks from shards or polygons, mask-aware transforms, padded batches, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from objmtl.data.seg_samples import SegmentationSamples, pad_collate, render_polygons
from objmtl.errors import UserError
from tests.helpers import compose_train

torch.set_num_threads(2)


def _sample(h: int = 40, w: int = 60, mask: np.ndarray | None = None, **ann) -> dict:
    rng = np.random.default_rng(0)
    return {"key": "000000007", "image": rng.integers(0, 255, (h, w, 3), dtype=np.uint8),
            "ann": {"image_id": 7, **ann}, "mask": mask}


def test_polygons_become_a_mask_crowd_ignored_small_objects_on_top() -> None:
    big = [[0, 0, 30, 0, 30, 20, 0, 20]]
    small = [[5, 5, 10, 5, 10, 10, 5, 10]]
    crowd = [[40, 0, 60, 0, 60, 10, 40, 10]]
    # the big one comes after the small one: drawn by decreasing area, the small one stays visible
    mask = render_polygons({"polygons": [small, big, crowd], "classes": [2, 0, 1], "iscrowd": [0, 0, 1]},
                           height=40, width=60)
    assert mask.shape == (40, 60) and mask.dtype == np.uint8
    assert mask[7, 7] == 3  # class 2 -> 3
    assert mask[15, 20] == 1  # class 0 -> 1
    assert mask[5, 50] == 255  # crowd: ignore
    assert mask[30, 30] == 0  # background
    assert render_polygons({"boxes": []}, height=4, width=4) is None


def test_a_sample_without_mask_or_polygons_is_all_ignore_and_counted() -> None:
    out = SegmentationSamples()(_sample())
    assert out["unlabeled"] == 1 and bool((out["mask"] == 255).all())
    assert out["image"].shape == (3, 40, 60) and out["orig_size"] == (40, 60) and out["image_id"] == 7


def test_a_mask_of_another_size_is_a_user_error() -> None:
    with pytest.raises(UserError, match=r"sample 000000007: mask \(20, 20\) and image \(40, 60\) differ in size"):
        SegmentationSamples()(_sample(mask=np.zeros((20, 20), np.uint8)))


@pytest.mark.parametrize("data", [(), ("data=seg",)], ids=["seg_synth", "seg"])
def test_the_seg_train_transform_moves_the_mask_with_the_image_and_pads_with_ignore(data, tmp_path) -> None:
    cfg = compose_train("task=seg", *data, "data.image_size=64", run_dir=tmp_path)
    adapter = SegmentationSamples(transform=instantiate(cfg.data.train_transform))
    adapter.reseed(0)
    h, w = 40, 60
    mask = np.zeros((h, w), np.uint8)
    mask[:, w // 2:] = 1  # right half class 1
    sample = _sample(h, w, mask=mask)
    sample["image"][:, w // 2:] = 255  # right half white, left half kept random
    sample["image"][:, : w // 2] = 0
    seen_pad = False
    for _ in range(20):
        out = adapter(sample)
        assert out["image"].shape == (3, 64, 64) and out["mask"].shape == (64, 64)
        m = out["mask"]
        seen_pad |= bool((m == 255).any())
        # where the mask says 1 the image was white, where 0 black: the same geometry was applied
        gray = out["image"].mean(0)
        if (m == 1).any() and (m == 0).any():
            assert gray[m == 1].mean() > gray[m == 0].mean()
        assert torch.equal(out["orig_mask"], torch.from_numpy(mask))
    assert seen_pad  # a 40x60 image resized to 43x64 (and 0.5x-2x scaled under data=seg): padded with ignore


def test_collate_pads_images_with_zero_and_masks_with_ignore() -> None:
    a = SegmentationSamples()(_sample(30, 50, mask=np.ones((30, 50), np.uint8)))
    b = SegmentationSamples()(_sample(40, 20, mask=np.zeros((40, 20), np.uint8)))
    batch = pad_collate([a, b])
    assert batch["images"].shape == (2, 3, 64, 64) and batch["masks"].shape == (2, 64, 64)
    assert batch["image_sizes"].tolist() == [[30, 50], [40, 20]]
    assert bool((batch["masks"][0, 30:] == 255).all()) and bool((batch["masks"][0, :30, :50] == 1).all())
    assert float(batch["images"][1, :, :, 20:].abs().sum()) == 0.0
    assert batch["keys"] == ["000000007"] * 2 and batch["unlabeled"] == 0
    assert [tuple(m.shape) for m in batch["orig_masks"]] == [(30, 50), (40, 20)]
