"""YOLO txt conversion of the real sets: exact counts against independent readings, and bad input."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pytest
import yaml
from PIL import Image

from objmtl.data import ShardDataset, read_meta
from objmtl.data.convert import run_conversion
from objmtl.data.convert.engine import NO_LABEL, NON_FINITE
from objmtl.data.convert.yolo import read_yolo
from objmtl.errors import UserError
from tests.helpers import run_cli

pytestmark = pytest.mark.realdata


def _lines(folder: Path) -> dict[str, list[list[str]]]:
    """Label file stem -> its non-empty lines split into fields (plain reading, no objmtl)."""
    return {p.stem: [ln.split() for ln in p.read_text().splitlines() if ln.strip()]
            for p in sorted(folder.glob("*.txt"))}


def _convert(src: Path, out: Path, **kwargs: object) -> dict:
    """In process (the CLI's start-up costs seconds on a shared machine; test_coco128 runs the CLI)."""
    return run_conversion(read_yolo(src, **kwargs), out, workers=1, progress=False).to_dict()


def _convert_cli(src: Path, out: Path, *args: str) -> dict:
    result = run_cli("objmtl-data", "convert", "--format", "yolo", "--src", str(src), "--out", str(out),
                     "--workers", "1", *args, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads((out / "report.json").read_text())


def _samples(out: Path) -> list[dict]:
    return [s for split in read_meta(out).splits for s in ShardDataset(root=out, split=split)]


def test_coco128_boxes(real_data: Path, tmp_path: Path) -> None:
    src = real_data / "detection" / "coco128"
    labels = _lines(src / "labels" / "train2017")
    images = sorted(p.stem for p in (src / "images" / "train2017").glob("*.jpg"))
    per_class = Counter(int(f[0]) for lines in labels.values() for f in lines)
    assert (len(images), len(labels), sum(per_class.values()), len(per_class)) == (64, 63, 542, 61)
    assert sorted(set(images) - set(labels)) == ["000000000250"]
    out = tmp_path / "det"
    report = _convert_cli(src, out, "--images", "images/train2017", "--labels", "labels/train2017",
                      "--names", str(src / "config.yaml"), "--val-fraction", "0.25", "--seed", "3")
    assert report["fixed"].get(NO_LABEL) == 1 and report["images_read"] == 64
    assert report["instances_dropped"] == 0 and report["label_files_without_image"] == 0
    meta = read_meta(out)
    names = yaml.safe_load((src / "config.yaml").read_text())["names"]
    assert meta.classes == [names[i] for i in range(80)] and meta.tasks == ["det"]
    assert report["samples_written"] == {"train": 48, "val": 16}
    samples = _samples(out)
    boxes = Counter(c for s in samples for c in s["ann"]["classes"])
    assert sum(boxes.values()) == 542 - report["instances_dropped"]
    assert dict(boxes) == dict(per_class)
    by_source = {Path(s["ann"]["source"]).stem: s for s in samples}
    assert by_source["000000000250"]["ann"]["boxes"] == []
    stem = "000000000009"
    w, h = Image.open(src / "images" / "train2017" / f"{stem}.jpg").size
    cls, cx, cy, bw, bh = labels[stem][0][0], *map(float, labels[stem][0][1:])
    ann = by_source[stem]["ann"]
    assert ann["classes"][0] == int(cls) and (ann["width"], ann["height"]) == (w, h)
    expect = [(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h]
    assert ann["boxes"][0] == pytest.approx(expect, abs=0.01)


def test_coco8_seg_polygons(real_data: Path, tmp_path: Path) -> None:
    src = real_data / "segmentation" / "coco8-seg"
    counts = {s: sum(len(v) for v in _lines(src / "labels" / s).values()) for s in ("train", "val")}
    assert counts == {"train": 13, "val": 17}
    out = tmp_path / "seg"
    report = _convert(src, out)
    assert report["samples_written"] == {"train": 4, "val": 4}
    meta = read_meta(out)
    assert "seg" in meta.tasks and "det" in meta.tasks
    for split, n in counts.items():
        anns = [s["ann"] for s in ShardDataset(root=out, split=split)]
        assert sum(len(a["polygons"]) for a in anns) == n
        for a in anns:
            for (x1, y1, x2, y2), rings in zip(a["boxes"], a["polygons"], strict=True):
                assert len(rings) == 1 and len(rings[0]) >= 6  # the box is the polygon's extent
                assert (min(rings[0][0::2]), max(rings[0][0::2])) == pytest.approx((x1, x2), abs=0.01)
                assert (min(rings[0][1::2]), max(rings[0][1::2])) == pytest.approx((y1, y2), abs=0.01)


def test_coco8_pose_keypoints(real_data: Path, tmp_path: Path) -> None:
    src = real_data / "pose" / "coco8-pose"
    lines = {s: [f for v in _lines(src / "labels" / s).values() for f in v] for s in ("train", "val")}
    assert {s: len(v) for s, v in lines.items()} == {"train": 7, "val": 14}
    visible = {s: sum(float(v) > 0 for f in fs for v in f[7::3]) for s, fs in lines.items()}
    out = tmp_path / "pose"
    _convert(src, out, task="pose")
    meta = read_meta(out)
    assert meta.tasks == ["det", "pose"] and meta.num_keypoints == 17 and meta.classes == ["0"]
    assert meta.keypoints.names[0] == "nose" and len(meta.keypoints.sigmas) == 17
    assert [1, 2] in meta.keypoints.flip_pairs and [15, 13] in meta.keypoints.skeleton
    for split in ("train", "val"):
        anns = [s["ann"] for s in ShardDataset(root=out, split=split)]
        kpts = [k for a in anns for k in a["keypoints"]]
        assert len(kpts) == len(lines[split]) and all(len(k) == 17 for k in kpts)
        assert sum(p[2] > 0 for k in kpts for p in k) == visible[split]
        assert all(p == [0, 0, 0] for k in kpts for p in k if p[2] == 0)


def test_lightly_panoptic_ids(real_data: Path, tmp_path: Path) -> None:
    src = real_data / "segmentation" / "coco128-val-lightly"
    config = src / "instance_segmentation" / "config.yaml"
    names = yaml.safe_load(config.read_text())["names"]
    labels = _lines(src / "instance_segmentation" / "labels" / "val2017")
    ids = Counter(int(f[0]) for v in labels.values() for f in v)
    assert (sum(ids.values()), len(ids)) == (365, 59)
    out = tmp_path / "inst"
    report = _convert(src, out, images="images/val2017", labels="instance_segmentation/labels/val2017",
                      names=config)
    assert report["instances_written"] == 365
    meta = read_meta(out)
    assert meta.classes == [names[i] for i in sorted(names)] and "seg" in meta.tasks
    assert meta.class_ids == sorted(names)  # gapped panoptic ids: kept for results files
    by_source = {Path(s["ann"]["source"]).stem: s["ann"] for s in _samples(out)}
    seen = Counter()
    for stem, lines in labels.items():
        got = [meta.classes[c] for c in by_source[stem]["classes"]]
        assert got == [names[int(f[0])] for f in lines]
        assert len(by_source[stem]["polygons"]) == len(lines)
        seen.update(got)
    assert seen == Counter({names[i]: n for i, n in ids.items()})


def _tiny(root: Path, label: str) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    Image.new("RGB", (40, 20), (90, 120, 30)).save(root / "images" / "a.jpg")
    (root / "labels" / "a.txt").write_text(label)
    (root / "names.txt").write_text("cat\ndog\n")
    return root


def test_unknown_class_fails_the_cli(tmp_path: Path) -> None:
    root = _tiny(tmp_path / "src", "0 0.5 0.5 0.2 0.2\n7 0.5 0.5 0.2 0.2\n")
    result = run_cli("objmtl-data", "convert", "--format", "yolo", "--src", str(root), "--out",
                     str(tmp_path / "out"), "--names", str(root / "names.txt"), "--workers", "1")
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert f"{root / 'labels' / 'a.txt'}:2" in lines[0] and "0=cat, 1=dog" in lines[0]
    assert not (tmp_path / "out" / "meta.json").exists()


@pytest.mark.parametrize(("line", "words"), [
    ("1 0.5 0.5 0.2", ["4 fields", "expected 5"]),
    ("1 0.1 0.1 0.2 0.1 0.3 0.4 0.5 0.6 0.7", ["10 fields", "--task pose"]),
    ("1 0.5 x 0.2 0.2", ["not a number"]),
    ("1.5 0.5 0.5 0.2 0.2", ["class id '1.5'"]),
])
def test_malformed_line_is_one_line_error(tmp_path: Path, line: str, words: list[str]) -> None:
    root = _tiny(tmp_path / "src", f"0 0.5 0.5 0.2 0.2\n\n{line}\n")
    with pytest.raises(UserError) as error:
        read_yolo(root, names=root / "names.txt")
    message = str(error.value)
    assert "\n" not in message and f"{root / 'labels' / 'a.txt'}:3" in message
    assert all(w in message for w in words), message


def test_nan_is_a_counted_drop(tmp_path: Path) -> None:
    root = _tiny(tmp_path / "src", "0 0.5 nan 0.2 0.2\n1 0.5 0.5 0.5 0.5\n1 0.1 0.1 0.2 0.1 0.3 inf\n")
    (root / "labels" / "b.txt").write_text("0 0.5 0.5 0.2 0.2\n")  # a label file without image
    out = tmp_path / "out"
    report = _convert(root, out, names=root / "names.txt", val_fraction=0.0)
    assert report["dropped"] == {NON_FINITE: 2} and report["instances_written"] == 1
    assert report["label_files_without_image"] == 1
    (sample,) = ShardDataset(root=out, split="train")
    assert sample["ann"]["classes"] == [1] and sample["ann"]["boxes"] == [[10.0, 5.0, 30.0, 15.0]]
    assert not any(math.isnan(v) for v in sample["ann"]["boxes"][0])


def test_split_file_and_two_dim_keypoints(tmp_path: Path) -> None:
    root = _tiny(tmp_path / "src", "0 0.5 0.5 0.4 0.4 0.1 0.2 -1 -1 0.3 0.4\n")
    Image.new("RGB", (40, 20)).save(root / "images" / "b.jpg")
    (root / "data.yaml").write_text("names: {0: person}\nkpt_shape: [3, 2]\nflip_idx: [0, 2, 1]\n")
    (root / "val.txt").write_text("./images/b.jpg\nmissing\n")
    out = tmp_path / "out"
    report = _convert(root, out, names=root / "data.yaml", split_lists={"val": root / "val.txt"})
    assert report["samples_written"] == {"train": 1, "val": 1} and report["label_files_without_image"] == 1
    meta = read_meta(out)
    assert meta.keypoints.names == ["kp0", "kp1", "kp2"] and meta.keypoints.flip_pairs == [[1, 2]]
    (sample,) = ShardDataset(root=out, split="train")
    assert sample["ann"]["keypoints"] == [[[4.0, 4.0, 2], [0, 0, 0], [12.0, 8.0, 2]]]
    assert sample["ann"]["boxes"] == [[12.0, 6.0, 28.0, 14.0]]
