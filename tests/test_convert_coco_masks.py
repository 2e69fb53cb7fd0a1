"""COCO json and semantic-mask converters on the real sample data, through the CLI and the API."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from objmtl.data import ShardDataset, read_meta
from objmtl.data.convert.coco import COCO_SIGMAS, read_coco, render_mask
from objmtl.data.convert.engine import MASK_SIZE, NO_LABEL, OUTSIDE_ROOT, run_conversion
from objmtl.data.convert.masks import class_lut, read_masks
from objmtl.errors import UserError
from tests.helpers import run_cli

pytestmark = pytest.mark.realdata

LIGHTLY = "segmentation/coco128-val-lightly"
LIGHTLY_ARGS = ("--images", "images/val2017", "--masks", "semantic_segmentation/masks/val2017")


def _samples(out: Path) -> list[dict]:
    meta = read_meta(out)
    return [s for split in meta.splits for s in ShardDataset(root=out, split=split)]


def _convert(*args: str) -> None:
    proc = run_cli("objmtl-data", "convert", "--workers", "1", *args)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.fixture(scope="module")
def tiny(real_data: Path) -> Path:
    return real_data / "pose" / "tiny_coco"


def test_coco_keypoints_cli(tiny: Path, tmp_path: Path) -> None:
    raw = json.loads((tiny / "annotations" / "person_keypoints_train2017.json").read_text())
    anns = raw["annotations"]
    assert (len(raw["images"]), len(anns)) == (50, 99)
    assert sum(a["iscrowd"] for a in anns) == 3
    assert sum(any(v > 0 for v in a["keypoints"][2::3]) for a in anns) == 57
    out = tmp_path / "kp"
    _convert("--format", "coco", "--src", str(tiny), "--out", str(out),
             "--ann", "train=annotations/person_keypoints_train2017.json")
    meta = read_meta(out)
    assert meta.tasks == ["det", "seg", "inst", "pose"] and meta.classes == ["person"]
    assert meta.num_keypoints == 17 and meta.keypoints.sigmas == pytest.approx(COCO_SIGMAS)
    assert [0, 1] in meta.keypoints.skeleton and [15, 16] in meta.keypoints.flip_pairs
    samples = _samples(out)
    assert len(samples) == 50 and {"train", "val"} <= set(meta.splits)
    expected: dict[int, list] = {im["id"]: [] for im in raw["images"]}
    for a in anns:
        expected[a["image_id"]].append(np.reshape(a["keypoints"], (17, 3)))
    got_labelled = 0
    for s in samples:
        kps = s["ann"]["keypoints"]
        assert len(kps) == len(expected[s["ann"]["image_id"]])
        for mine, theirs in zip(kps, expected[s["ann"]["image_id"]], strict=True):
            np.testing.assert_allclose(np.asarray(mine, dtype=float), theirs)
            got_labelled += bool(np.asarray(mine)[:, 2].any())
    assert got_labelled == 57
    assert sum(sum(s["ann"]["iscrowd"]) for s in samples) == 3


def test_coco_instances_cli(tiny: Path, tmp_path: Path) -> None:
    raw = json.loads((tiny / "annotations" / "instances_train2017.json").read_text())
    names = {c["id"]: c["name"] for c in raw["categories"]}
    want = Counter(names[a["category_id"]] for a in raw["annotations"])
    assert len(raw["annotations"]) == 470 and len(want) == 49
    out = tmp_path / "inst"
    _convert("--format", "coco", "--src", str(tiny), "--out", str(out), "--images", "train2017",
             "--ann", f"train={tiny / 'annotations' / 'instances_train2017.json'}", "--val-fraction", "0")
    meta = read_meta(out)
    assert meta.classes == [names[c] for c in sorted(names)] and meta.tasks == ["det", "seg", "inst"]
    samples = _samples(out)
    assert len(samples) == 50 == meta.count("train")
    got = Counter(meta.classes[c] for s in samples for c in s["ann"]["classes"])
    assert got == want
    by_image: dict[int, list] = {}
    for a in raw["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    for s in samples:
        theirs = by_image.get(s["ann"]["image_id"], [])
        boxes = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in theirs)]
        np.testing.assert_allclose(np.asarray(s["ann"]["boxes"]).reshape(-1, 4), np.reshape(boxes, (-1, 4)),
                                   atol=1e-3)
        assert s["ann"]["area"] == pytest.approx([a["area"] for a in theirs])
        for a, rings in zip(theirs, s["ann"]["polygons"], strict=True):
            assert len(rings) == (0 if isinstance(a["segmentation"], dict) else len(a["segmentation"]))
    report = json.loads((out / "report.json").read_text())
    assert report["instances_read"] == report["instances_written"] == 470


def test_masks_cli(real_data: Path, tmp_path: Path) -> None:
    root = real_data / LIGHTLY
    config = yaml.safe_load((root / "semantic_segmentation" / "config.yaml").read_text())["classes"]
    present: set[int] = set()
    sources = sorted((root / "semantic_segmentation" / "masks" / "val2017").glob("*.png"))
    for p in sources:
        present |= set(np.unique(np.asarray(Image.open(p))).tolist())
    present.discard(0)
    assert len(sources) == 50 and len(present) == 103
    out = tmp_path / "sem"
    _convert("--format", "masks", "--src", str(root), "--out", str(out), *LIGHTLY_ARGS,
             "--class-map", str(root / "semantic_segmentation" / "config.yaml"))
    meta = read_meta(out)
    assert meta.tasks == ["seg"] and meta.mask_classes == meta.classes
    assert meta.mask_classes == [config[k] for k in sorted(config) if k != 0]
    samples = _samples(out)
    assert len(samples) == 50
    seen: set[int] = set()
    for s in samples:
        ids = np.asarray(s["mask"])
        assert ids.shape == s["image"].shape[:2]
        assert ((ids < len(meta.mask_classes)) | (ids == 255)).all()
        source = np.asarray(Image.open(root / "semantic_segmentation/masks/val2017" / f"{Path(s['ann']['source']).stem}.png"))
        for sid in np.unique(source):  # each source id lands on its name (0 = unlabeled -> ignore)
            mapped = np.unique(ids[source == sid])
            assert mapped.tolist() == ([255] if sid == 0 else [meta.mask_classes.index(config[int(sid)])])
        seen |= set(np.unique(ids).tolist()) - {255}
    assert len(seen) == 103


def test_mask_account(real_data: Path, tmp_path: Path) -> None:
    root = real_data / LIGHTLY
    src = tmp_path / "src"
    (src / "img").mkdir(parents=True)
    (src / "msk").mkdir()
    stems = [p.stem for p in sorted((root / "images" / "val2017").glob("*.jpg"))[:4]]
    for stem in stems:
        shutil.copy(root / "images" / "val2017" / f"{stem}.jpg", src / "img")
    for stem in stems[:3]:
        shutil.copy(root / "semantic_segmentation" / "masks" / "val2017" / f"{stem}.png", src / "msk")
    small = Image.open(src / "msk" / f"{stems[1]}.png")
    small.resize((small.width // 2, small.height // 2), Image.NEAREST).save(src / "msk" / f"{stems[1]}.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(src / "msk" / "orphan.png")
    conv = read_masks(src, images="img", masks="msk", class_map=root / "semantic_segmentation" / "config.yaml",
                      val_fraction=0.0)
    run_conversion(conv, tmp_path / "out", workers=1, progress=False)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["images_read"] == 4 and report["samples_written"] == {"train": 3}
    assert report["dropped"] == {MASK_SIZE: 1} and report["fixed"] == {NO_LABEL: 1}
    assert report["label_files_without_image"] == 1


def test_class_lut() -> None:
    names, lut = class_lut({0: "unlabeled", 1: "person", 7: "train", 200: "wall"})
    assert names == ["person", "train", "wall"]
    assert (lut[0], lut[1], lut[7], lut[200], lut[255], lut[3]) == (255, 0, 1, 2, 255, 254)


def _tiny_json(tiny: Path, src: Path, edit) -> Path:
    raw = json.loads((tiny / "annotations" / "instances_train2017.json").read_text())
    edit(raw)
    src.mkdir(parents=True, exist_ok=True)
    path = src / "ann.json"
    path.write_text(json.dumps(raw))
    return path


def test_missing_key_cli(tiny: Path, tmp_path: Path) -> None:
    path = _tiny_json(tiny, tmp_path / "src", lambda raw: raw["annotations"][12].pop("bbox"))
    proc = run_cli("objmtl-data", "convert", "--format", "coco", "--src", str(tiny), "--out",
                   str(tmp_path / "out"), "--ann", f"train={path}")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "annotations[12].bbox" in lines[0] and "ann.json" in lines[0]


def test_unknown_ids(tiny: Path, tmp_path: Path) -> None:
    path = _tiny_json(tiny, tmp_path / "a", lambda raw: raw["annotations"][3].update(category_id=91))
    with pytest.raises(UserError, match=r"annotations\[3\]\.category_id: 91 .*known: 1, 2, 3"):
        read_coco(tiny, anns={"train": path})
    path = _tiny_json(tiny, tmp_path / "b", lambda raw: raw["annotations"][0].update(image_id=-5))
    with pytest.raises(UserError, match=r"ann\.json: annotations\[0\]\.image_id: -5"):
        read_coco(tiny, anns={"train": path})


def test_outside_root_cli(tiny: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "images").mkdir(parents=True)
    first = sorted((tiny / "train2017").glob("*.jpg"))[0]
    shutil.copy(first, src / "images" / "a.jpg")
    raw = {"images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "../../etc/passwd"},
                      {"id": 3, "file_name": "/etc/passwd"}],
           "annotations": [{"id": 1, "image_id": 2, "category_id": 1, "bbox": [1, 1, 5, 5]}],
           "categories": [{"id": 1, "name": "thing"}]}
    (src / "ann.json").write_text(json.dumps(raw))
    out = tmp_path / "out"
    _convert("--format", "coco", "--src", str(src), "--out", str(out), "--ann", "train=ann.json",
             "--images", "images", "--val-fraction", "0")
    report = json.loads((out / "report.json").read_text())
    assert report["dropped"] == {OUTSIDE_ROOT: 2, "instances of a dropped image": 1}
    assert report["samples_written"] == {"train": 1} and report["images_read"] == 3


def _rle(bits: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE: run lengths over the column-major pixels, starting with zeros."""
    counts, current, run = [], 0, 0
    for v in bits.T.ravel():
        if v != current:
            counts.append(run)
            current, run = v, 0
        run += 1
    return [*counts, run]


def test_render_mask() -> None:
    square = {"cls": 0, "iscrowd": 0, "area": 100.0, "rings": [[0, 0, 10, 0, 10, 10, 0, 10]], "rle": None}
    inner = {"cls": 4, "iscrowd": 0, "area": 4.0, "rings": [[2, 2, 4, 2, 4, 4, 2, 4]], "rle": None}
    crowd_bits = np.zeros((20, 20), np.uint8)
    crowd_bits[12:, 12:] = 1
    crowd = {"cls": 1, "iscrowd": 1, "area": 64.0, "rings": [], "rle": {"counts": _rle(crowd_bits), "size": [20, 20]}}
    out = render_mask([inner, square, crowd], height=20, width=20)
    assert out[3, 3] == 5 and out[8, 8] == 1 and out[15, 15] == 255 and out[11, 5] == 0
    assert set(np.unique(out).tolist()) == {0, 1, 5, 255}


def test_rle_masks(tiny: Path, tmp_path: Path) -> None:
    conv = read_coco(tiny, anns={"train": tiny / "annotations" / "instances_train2017.json"}, rle_masks=True,
                     val_fraction=0.0)
    assert conv.meta.mask_classes[0] == "background" and len(conv.meta.mask_classes) == 81
    run_conversion(conv, tmp_path / "out", workers=1, progress=False)
    samples = _samples(tmp_path / "out")
    assert len(samples) == 50
    values = set()
    for s in samples:
        ids = np.asarray(s["mask"])
        assert ids.shape == s["image"].shape[:2]
        values |= set(np.unique(ids).tolist())
    assert 255 in values and 0 in values and max(values - {255}) <= 80
