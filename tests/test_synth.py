"""The synthetic data set: determinism, the shard layout and the agreement of all annotation kinds."""

from __future__ import annotations

import io
import json
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from objmtl.data.schema import validate_annotation
from objmtl.data.synth import SYNTH_CLASSES, render_sample, synth_meta, write_synthetic
from objmtl.errors import UserError

SIZE = 64


def _read_split(root: Path, split: str) -> list[dict[str, bytes]]:
    """All samples of a split, in tar order, as {extension: bytes} (plus ``__key__``)."""
    samples: list[dict[str, bytes]] = []
    for tar_path in sorted((root / split).glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            for member in tar.getmembers():
                key, ext = member.name.split(".", 1)
                if not samples or samples[-1]["__key__"] != key.encode():
                    samples.append({"__key__": key.encode()})
                data = tar.extractfile(member)
                assert data is not None
                samples[-1][ext] = data.read()
    return samples


def _tar_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.tar"))}


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "a"
    write_synthetic(root, n=40, seed=3, image_size=SIZE, max_count=16)
    return root


def test_same_seed_gives_identical_bytes_and_other_seed_differs(shards: Path, tmp_path: Path) -> None:
    write_synthetic(tmp_path / "b", n=40, seed=3, image_size=SIZE, max_count=16)
    write_synthetic(tmp_path / "c", n=40, seed=4, image_size=SIZE, max_count=16)
    a, b, c = _tar_bytes(shards), _tar_bytes(tmp_path / "b"), _tar_bytes(tmp_path / "c")
    assert len(a) > 1 and a == b
    assert (shards / "meta.json").read_bytes() == (tmp_path / "b" / "meta.json").read_bytes()
    assert a.keys() == c.keys() and all(a[k] != c[k] for k in a)


def test_sample_does_not_depend_on_n(shards: Path, tmp_path: Path) -> None:
    write_synthetic(tmp_path / "small", n=10, seed=3, image_size=SIZE)
    small = {json.loads(s["json"])["image_id"]: s for s in _read_split(tmp_path / "small", "train")}
    big = {json.loads(s["json"])["image_id"]: s for split in ("train", "val", "test")
           for s in _read_split(shards, split)}
    assert small.keys() == set(range(7))
    for i, s in small.items():
        assert (s["jpg"], s["json"], s["mask.png"]) == (big[i]["jpg"], big[i]["json"], big[i]["mask.png"])
    image, ann, mask = render_sample(5, seed=3, image_size=SIZE)
    assert json.loads(small[5]["json"]) == ann
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(small[5]["mask.png"]))), mask)


def test_meta_counts_splits_and_members(shards: Path) -> None:
    meta = json.loads((shards / "meta.json").read_text())
    assert meta["classes"] == list(SYNTH_CLASSES) and meta["source"] == "synth"
    assert meta["mask_classes"] == ["background", *SYNTH_CLASSES]
    assert meta["counts"] == {"train": 28, "val": 8, "test": 4}
    next_id = 0
    for split in ("train", "val", "test"):
        samples = _read_split(shards, split)
        assert len(samples) == meta["counts"][split] == sum(s["count"] for s in meta["splits"][split])
        if split == "train":
            assert [s["count"] for s in meta["splits"][split]] == [16, 12]  # max_count rotates tars
        for s in samples:
            assert set(s) == {"__key__", "jpg", "json", "mask.png"}
            assert json.loads(s["json"])["image_id"] == next_id  # split by index, in order
            next_id += 1
            img = Image.open(io.BytesIO(s["jpg"]))
            assert img.format == "JPEG" and img.mode == "RGB" and img.size == (SIZE, SIZE)
            assert Image.open(io.BytesIO(s["mask.png"])).mode == "L"


def test_annotations_agree_with_mask(shards: Path) -> None:
    meta = synth_meta()
    samples = [s for split in ("train", "val", "test") for s in _read_split(shards, split)][:30]
    assert len(samples) == 30
    occluded = 0
    for s in samples:
        ann = json.loads(s["json"])
        mask = np.asarray(Image.open(io.BytesIO(s["mask.png"])))
        validate_annotation(ann, meta=meta, where="synth")
        assert (ann["width"], ann["height"], ann["source"]) == (SIZE, SIZE, "synth")
        n = len(ann["classes"])
        assert 1 <= n <= 4 and mask.shape == (SIZE, SIZE) and mask.max() <= len(SYNTH_CLASSES)
        assert ann["iscrowd"] == ann["difficult"] == ann["truncated"] == [0] * n

        visible = np.bincount(mask.ravel(), minlength=len(SYNTH_CLASSES) + 1)
        assert ann["label"] == int(visible[1:].argmax())
        assert sum(ann["area"]) == int((mask > 0).sum())

        # Re-rasterising the polygons in order reproduces the mask and every instance's area.
        inst_img = Image.new("L", (SIZE, SIZE), 0)
        for i, ring in enumerate(ann["polygons"]):
            assert len(ring) == 1 and len(ring[0]) % 2 == 0
            ImageDraw.Draw(inst_img).polygon(ring[0], fill=i + 1)
        inst = np.asarray(inst_img)
        lut = np.array([0] + [c + 1 for c in ann["classes"]], np.uint8)
        assert np.array_equal(lut[inst], mask)
        assert np.bincount(inst.ravel(), minlength=n + 1)[1:].tolist() == ann["area"]
        assert all(a > 0 for a in ann["area"])

        for i, (box, cls, ring, kps) in enumerate(
                zip(ann["boxes"], ann["classes"], ann["polygons"], ann["keypoints"], strict=True)):
            x0, y0, x1, y1 = box
            assert 0 <= x0 < x1 <= SIZE and 0 <= y0 < y1 <= SIZE
            pts = np.array(ring[0]).reshape(-1, 2)
            assert np.allclose([*pts.min(0), *pts.max(0)], box)
            assert len(kps) == 4
            for x, y, v in kps:
                assert v in (1, 2)
                occluded += v == 1
                px, py = int(x), int(y)
                near = inst[max(py - 1, 0):py + 2, max(px - 1, 0):px + 2]
                assert (v == 2) == bool((near == i + 1).any())
                if v == 2:
                    assert x0 - 1 <= x <= x1 + 1 and y0 - 1 <= y <= y1 + 1
                    assert (mask[max(py - 1, 0):py + 2, max(px - 1, 0):px + 2] == cls + 1).any()
            top, right, bottom, left = kps
            assert top[1] == y0 and bottom[1] == y1 and left[0] == x0 and right[0] == x1
        assert all(v == 2 for _, _, v in ann["keypoints"][-1])  # the last-drawn shape is never hidden
    assert occluded < 0.2 * 4 * sum(len(json.loads(s["json"])["classes"]) for s in samples)


def test_label_histogram_is_balanced_and_dominant_shape_decides() -> None:
    labels, agree, dominant = Counter(), 0, 0
    for i in range(200):
        _, ann, _ = render_sample(i, seed=0, image_size=SIZE)
        labels[ann["label"]] += 1
        agree += ann["classes"][int(np.argmax(ann["area"]))] == ann["label"]
        first, second = [*sorted(ann["area"], reverse=True), 0][:2]
        dominant += first >= 2 * second
    assert all(labels[c] >= 20 for c in range(len(SYNTH_CLASSES))), labels
    # Learnable: one shape is clearly the largest, and it almost always gives the label.
    assert dominant >= 0.85 * 200 and agree >= 0.9 * 200, (dominant, agree)


def test_images_are_textured_and_shapes_contrast() -> None:
    worst = np.inf
    for i in range(20):
        image, ann, mask = render_sample(i, seed=0, image_size=SIZE)
        assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
        img = image.astype(float)
        assert img[mask == 0].std(0).mean() > 10  # not a flat background
        for box, cls in zip(ann["boxes"], ann["classes"], strict=True):
            x0, y0, x1, y1 = (int(v) for v in box)
            win = (slice(max(y0 - 3, 0), y1 + 4), slice(max(x0 - 3, 0), x1 + 4))
            near_bg = img[win][mask[win] == 0]
            if len(near_bg) > 20:
                inside = img[win][mask[win] == cls + 1]
                worst = min(worst, float(np.linalg.norm(inside.mean(0) - near_bg.mean(0))))
    assert worst > 40, worst


def test_bad_arguments_and_existing_output(tmp_path: Path) -> None:
    with pytest.raises(UserError):
        write_synthetic(tmp_path / "x", n=10, val_fraction=0.8, test_fraction=0.5)
    write_synthetic(tmp_path / "y", n=3, image_size=32, progress=True)
    with pytest.raises(UserError, match="exists"):
        write_synthetic(tmp_path / "y", n=3, image_size=32)
    meta = write_synthetic(tmp_path / "y", n=4, image_size=32, overwrite=True)
    assert meta.count("train") + meta.count("val") + meta.count("test") == 4
    assert not list(tmp_path.glob(".*partial*"))
