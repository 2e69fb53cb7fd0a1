"""Detection samples: boxes stay with their labels through flips and crops, padded batches, grouping."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from objmtl.data.det_samples import LABEL_FIELDS, DetectionSamples, PadCollate, group_by_aspect
from objmtl.data.shard_reader import ShardDataset
from objmtl.errors import UserError
from tests.helpers import compose_train


def _bp(**kw: Any) -> A.BboxParams:
    return A.BboxParams(format="pascal_voc", label_fields=list(LABEL_FIELDS), clip=True,
                        filter_invalid_bboxes=True, **kw)


def _sample(h: int, w: int, **ann: Any) -> dict[str, Any]:
    image = np.random.default_rng(h * 1000 + w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return {"key": "000000007", "image": image, "ann": ann, "mask": None}


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from objmtl.data.synth import write_synthetic

    root = tmp_path_factory.mktemp("det") / "shards"
    write_synthetic(root, n=16, image_size=96)
    return root


@pytest.fixture(scope="module")
def decoded(shards: Path) -> list[dict[str, Any]]:
    samples = list(ShardDataset(root=shards, split="train"))
    for s in samples:  # crowd flags to follow: every other box
        s["ann"]["iscrowd"] = [i % 2 for i in range(len(s["ann"]["boxes"]))]
    return samples


@pytest.fixture(scope="module")
def cfg(shards: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    return compose_train("data=det", f"data.root={shards}", "data.image_size=128", run_dir=tmp_path_factory.mktemp("run"))


def test_flip_mirrors_boxes_with_their_labels_crowd_flags_and_areas(decoded: list[dict[str, Any]]) -> None:
    adapter = DetectionSamples(transform=A.Compose([A.HorizontalFlip(p=1)], bbox_params=_bp()))
    for s in decoded:
        out = adapter(s)
        ann, w = s["ann"], s["image"].shape[1]
        src = torch.tensor(ann["boxes"], dtype=torch.float32)
        assert out["boxes"].shape == src.shape and out["dropped_boxes"] == 0
        # x1' = W - x2 (exact up to float32 rounding), y unchanged
        torch.testing.assert_close(out["boxes"][:, 0], w - src[:, 2], atol=1e-4, rtol=0)
        torch.testing.assert_close(out["boxes"][:, 2], w - src[:, 0], atol=1e-4, rtol=0)
        torch.testing.assert_close(out["boxes"][:, 1::2], src[:, 1::2], atol=1e-4, rtol=0)
        assert out["labels"].tolist() == ann["classes"] and out["labels"].dtype == torch.long
        assert out["iscrowd"].tolist() == [bool(c) for c in ann["iscrowd"]]
        torch.testing.assert_close(out["area"], torch.tensor(ann["area"], dtype=torch.float32), rtol=1e-4, atol=0)
        assert torch.equal(out["image"], torch.from_numpy(s["image"][:, ::-1].copy()).permute(2, 0, 1) / 255)
        assert out["image_id"] == ann["image_id"] and out["scale"] == (1.0, 1.0)


def test_crop_keeps_every_box_with_its_own_label() -> None:
    # each pixel holds its own x (red) and y (green): the output image tells where the crop was
    yy, xx = np.mgrid[0:96, 0:96]
    image = np.stack([xx, yy, np.zeros_like(xx)], axis=-1).astype(np.uint8)
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 70, (8, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(6, 26, (8, 2))], axis=1).round(1)
    sample = {"key": "1", "image": image, "ann": {"boxes": boxes.tolist(), "classes": list(range(8)),
                                                  "iscrowd": [i % 2 for i in range(8)], "area": [50.0] * 8}}
    crop = A.Compose([A.AtLeastOneBBoxRandomCrop(height=48, width=48)], bbox_params=_bp(min_visibility=0.25))
    adapter, dropped = DetectionSamples(transform=crop), 0
    for seed in range(20):
        adapter.reseed(seed)
        out = adapter(sample)
        x0, y0 = (round(float(v) * 255) for v in out["image"][:2, 0, 0])
        expected = np.clip(boxes[out["labels"].numpy()] - [x0, y0, x0, y0], 0, 48)
        assert out["size"] == (48, 48) and len(out["boxes"]) >= 1
        assert len(set(out["labels"].tolist())) == len(out["labels"])
        torch.testing.assert_close(out["boxes"], torch.tensor(expected, dtype=torch.float32), atol=1e-3, rtol=0)
        assert out["iscrowd"].tolist() == [bool(c % 2) for c in out["labels"].tolist()]
        assert out["dropped_boxes"] == 8 - len(out["boxes"])
        dropped += out["dropped_boxes"]
    assert dropped > 0  # alignment was checked with boxes dropped by the crop


def _squash_first(**kw: Any) -> dict[str, Any]:
    """A transform that makes its first box zero-width (as an aggressive augmentation might)."""
    boxes = np.array(kw["bboxes"], np.float64)
    boxes[0, 2] = boxes[0, 0]
    return {**kw, "bboxes": boxes}


@pytest.mark.parametrize("transform", [
    None,
    A.Compose([A.LongestMaxSize(max_size=128)], bbox_params=_bp()),
    A.Compose([A.HorizontalFlip(p=0)], bbox_params=A.BboxParams(format="pascal_voc", label_fields=LABEL_FIELDS)),
])
def test_zero_area_boxes_are_dropped_and_counted(transform: Any) -> None:
    boxes = [[10, 10, 10, 30], [5, 5, 25, 25], [10, 10, 30, 10], [200, 10, 220, 30], [30, 40, 60, 50]]
    sample = _sample(64, 96, boxes=boxes, classes=[0, 1, 2, 3, 3], iscrowd=[0, 0, 0, 0, 1])
    out = DetectionSamples(transform=transform)(sample)
    assert out["labels"].tolist() == [1, 3] and out["iscrowd"].tolist() == [False, True]
    assert out["dropped_boxes"] == 3
    sy, sx = out["scale"]
    expected = torch.tensor([[5.0, 5, 25, 25], [30, 40, 60, 50]]) * torch.tensor([sx, sy, sx, sy])
    torch.testing.assert_close(out["boxes"], expected, atol=1e-3, rtol=0)
    torch.testing.assert_close(out["area"], torch.tensor([400.0, 300.0]) * sy * sx)  # no area: the box's


def test_boxes_collapsed_by_the_transform_are_dropped() -> None:
    sample = _sample(32, 32, boxes=[[1, 1, 9, 9], [2, 2, 12, 12]], classes=[2, 3])
    out = DetectionSamples(transform=_squash_first)(sample)
    assert out["labels"].tolist() == [3] and out["dropped_boxes"] == 1


@pytest.mark.parametrize("ann", [{}, {"label": 1}, {"boxes": [], "classes": [], "iscrowd": [], "area": []}])
def test_an_image_without_boxes_gives_empty_targets_and_collates(ann: dict[str, Any], cfg: Any) -> None:
    for transform in (None, instantiate(cfg.data.train_transform)):
        out = DetectionSamples(transform=transform)(_sample(40, 60, **ann))
        assert out["boxes"].shape == (0, 4) and out["boxes"].dtype == torch.float32
        assert out["labels"].shape == (0,) and out["labels"].dtype == torch.long
        assert out["iscrowd"].dtype == torch.bool and out["area"].shape == (0,)
        assert out["dropped_boxes"] == 0 and out["image_id"] == 7
        batch = DetectionSamples.collate([out, out])
        assert batch["targets"][1]["boxes"].shape == (0, 4) and batch["images"].shape[2] % 32 == 0


def test_boxes_without_classes_is_a_user_error() -> None:
    with pytest.raises(UserError, match="2 boxes but no classes"):
        DetectionSamples()(_sample(32, 32, boxes=[[1, 1, 9, 9], [2, 2, 12, 12]]))


def test_collate_pads_to_a_multiple_of_32_with_zeros() -> None:
    adapter = DetectionSamples()
    outs = [adapter(_sample(65, 70, boxes=[[1, 2, 30, 40]], classes=[1])), adapter(_sample(40, 100))]
    batch = DetectionSamples.collate(outs)
    assert batch["images"].shape == (2, 3, 96, 128)
    assert batch["image_sizes"].tolist() == [[65, 70], [40, 100]] and batch["image_sizes"].dtype == torch.long
    for image, out, (h, w) in zip(batch["images"], outs, batch["image_sizes"].tolist(), strict=True):
        assert torch.equal(image[:, :h, :w], out["image"])
        assert image[:, h:].abs().sum() == 0 and image[:, :, w:].abs().sum() == 0
    assert batch["targets"][0]["labels"].tolist() == [1] and batch["targets"][0]["orig_size"] == (65, 70)
    # an instance overrides the class's divisor; both collates survive pickling (spawned workers)
    assert DetectionSamples(pad_divisor=64).collate(outs)["images"].shape == (2, 3, 128, 128)
    assert pickle.loads(pickle.dumps(DetectionSamples.collate))(outs)["images"].shape == (2, 3, 96, 128)
    assert PadCollate(pad_divisor=1)(outs)["images"].shape == (2, 3, 65, 100)


def test_group_by_aspect_gives_homogeneous_batches_and_loses_nothing() -> None:
    rng = np.random.default_rng(0)
    sizes = [(int(h), int(w)) for h, w in rng.integers(20, 80, (23, 2))]
    stream = [{"id": i, "size": s} for i, s in enumerate(sizes)]
    out = list(group_by_aspect(iter(stream), batch_size=4))
    assert sorted(s["id"] for s in out) == list(range(23))
    portrait = [h > w for h, w in sizes]
    full = (portrait.count(False) // 4 + portrait.count(True) // 4) * 4
    for i in range(0, full, 4):
        assert len({portrait[s["id"]] for s in out[i:i + 4]}) == 1
    assert [portrait[s["id"]] for s in out[full:]] == sorted(portrait[s["id"]] for s in out[full:])
    # decoded arrays and adapter tensors: orientation from the image itself
    images = [{"image": np.zeros((h, w, 3), np.uint8)} for h, w in sizes[:8]]
    assert len(list(group_by_aspect(images, batch_size=3))) == 8
    assert len(list(group_by_aspect([{"image": torch.zeros(3, 9, 5)}], batch_size=2))) == 1
    with pytest.raises(ValueError):
        list(group_by_aspect(stream, batch_size=0))


def test_config_composes_and_reseeding_reproduces(cfg: Any, decoded: list[dict[str, Any]]) -> None:
    assert cfg.data.train_transform.bbox_params.label_fields == list(LABEL_FIELDS)
    a = DetectionSamples(transform=instantiate(cfg.data.train_transform))
    b = DetectionSamples(transform=instantiate(cfg.data.train_transform))
    a.reseed(7)
    b.reseed(7)
    outs_a, outs_b = [a(s) for s in decoded], [b(s) for s in decoded]
    for x, y in zip(outs_a, outs_b, strict=True):
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["boxes"], y["boxes"])
        assert torch.equal(x["labels"], y["labels"]) and x["dropped_boxes"] == y["dropped_boxes"]
        h, w = x["size"]
        assert max(h, w) == cfg.data.image_size and x["image"].shape == (3, h, w)
        assert (x["boxes"] >= 0).all() and (x["boxes"][:, 2] <= w).all() and (x["boxes"][:, 3] <= h).all()
    b.reseed(8)
    assert any(not torch.equal(x["image"], b(s)["image"]) for x, s in zip(outs_a, decoded, strict=True))
    ev = DetectionSamples(transform=instantiate(cfg.data.eval_transform))(decoded[0])
    assert ev["size"] == (128, 128) and ev["scale"] == (128 / 96, 128 / 96)
    torch.testing.assert_close(ev["boxes"], torch.tensor(decoded[0]["ann"]["boxes"]) * 128 / 96,
                               atol=1e-3, rtol=0)


@pytest.mark.parametrize("label_fields", [None, ["labels"]])
def test_a_pipeline_that_cannot_carry_labels_is_a_user_error(label_fields: list[str] | None) -> None:
    bp = A.BboxParams(format="pascal_voc", label_fields=label_fields) if label_fields else None
    with pytest.raises(UserError, match="task=det needs"):
        DetectionSamples(transform=A.Compose([A.HorizontalFlip()], bbox_params=bp))


def test_the_datamodule_batches_detection_samples(shards: Path, cfg: Any) -> None:
    from objmtl.data.datamodule import ShardDataModule

    dm = ShardDataModule(root=str(shards), task="det", samples=DetectionSamples, batch_size=4, num_workers=0, shuffle_buffer=4,
                         train_transform=instantiate(cfg.data.train_transform))
    batch = next(iter(dm.train_dataloader()))
    assert batch["images"].shape[0] == 4 and batch["images"].shape[2] % 32 == 0
    assert len(batch["targets"]) == 4 and all(len(t["boxes"]) >= 1 for t in batch["targets"])


def test_crowd_and_difficult_flags_travel_with_their_boxes() -> None:
    bbox = A.BboxParams(format="pascal_voc", label_fields=list(LABEL_FIELDS))
    flip = A.Compose([A.HorizontalFlip(p=1.0)], bbox_params=bbox)
    ann = {"boxes": [[0, 0, 4, 4], [5, 5, 9, 9], [10, 2, 14, 8]], "classes": [0, 1, 2],
           "iscrowd": [0, 1, 1], "difficult": [1, 0, 1]}
    out = DetectionSamples(transform=flip)({"key": "7", "image": np.zeros((16, 20, 3), np.uint8), "ann": ann})
    assert out["labels"].tolist() == [0, 1, 2]
    assert out["iscrowd"].tolist() == [False, True, True]
    assert out["difficult"].tolist() == [True, False, True]
    batch = DetectionSamples.collate([out])
    assert batch["targets"][0]["difficult"].tolist() == [True, False, True]


def test_the_datamodule_groups_training_batches_by_orientation(tmp_path: Path) -> None:
    import io

    from PIL import Image

    from objmtl.data.datamodule import ShardDataModule
    from objmtl.data.schema import Meta
    from objmtl.data.shard_writer import ShardSetWriter

    root, sizes = tmp_path / "mixed", [(40, 64), (64, 40)] * 12  # landscape, portrait, alternating
    with ShardSetWriter(root, meta=Meta(classes=["a"], tasks=["det"])) as writer:
        for i, (h, w) in enumerate(sizes):
            buf = io.BytesIO()
            Image.new("RGB", (w, h), (i, 0, 0)).save(buf, format="PNG")
            writer.write("train", image=buf.getvalue(), ext="png",
                         ann={"image_id": i, "boxes": [[2, 2, 20, 20]], "classes": [0]})

    def batches(grouped: bool) -> list[dict[str, Any]]:
        dm = ShardDataModule(root=str(root), task="det", batch_size=4, num_workers=0, shuffle_buffer=8,
                             group_by_aspect=grouped)
        loader = dm.train_dataloader()
        assert len(loader) == len(sizes) // 4
        return list(loader)

    mixed = batches(False)
    grouped = batches(True)
    assert len(grouped) == len(mixed) == 6
    orientation = [{t["orig_size"][0] > t["orig_size"][1] for t in b["targets"]} for b in grouped]
    assert sum(len(o) == 1 for o in orientation) >= 5  # only the last may mix
    ids = sorted(int(t["image_id"]) for b in grouped for t in b["targets"])
    assert ids == list(range(len(sizes)))
    assert any(len({t["orig_size"][0] > t["orig_size"][1] for t in b["targets"]}) == 2 for b in mixed)
