"""VOC and plain-text converters, round-tripped on small trees written from real COCO128 labels.

There is no real VOC or plain-text sample, so the tests write both from ten COCO128 images and
their YOLO labels (read here without objmtl), convert them with ``objmtl-data convert`` and
compare what the shards hold with what was written.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from objmtl.data import ShardDataset, read_meta
from objmtl.data.convert.plain_text import read_text_lists
from objmtl.data.convert.voc import VOC_CLASSES, read_voc
from objmtl.errors import UserError
from tests.helpers import run_cli

pytestmark = pytest.mark.realdata

ORPHAN = "000000999999"  # an xml (and split-file id) without image
BACKGROUND = "000000000250"  # the COCO128 image without a label file
MASKED = 3  # the first images get a SegmentationClass PNG
UNKNOWN_PIXEL = 250  # a palette index that names no class


def _objects(coco: Path, stem: str, names: dict[int, str]) -> list[dict[str, Any]]:
    """YOLO ``cls cx cy w h`` -> absolute xyxy (unclipped), with made-up difficult / truncated flags."""
    with Image.open(coco / "images" / "train2017" / f"{stem}.jpg") as im:
        w, h = im.size
    label = coco / "labels" / "train2017" / f"{stem}.txt"
    out = []
    for i, line in enumerate(label.read_text().splitlines() if label.is_file() else []):
        c, cx, cy, bw, bh = line.split()
        cx, cy, bw, bh = float(cx) * w, float(cy) * h, float(bw) * w, float(bh) * h
        box = [cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2]
        clipped = [min(max(v, 0.0), float(lim)) for v, lim in zip(box, (w, h, w, h), strict=True)]
        out.append({"id": int(c), "name": names[int(c)], "box": box, "clipped": clipped,
                    "difficult": int(i % 3 == 1), "truncated": int(i % 4 == 2)})
    return out


def _voc_xml(stem: str, objects: list[dict[str, Any]]) -> str:
    parts = [f"<annotation>\n  <folder>VOC</folder>\n  <filename>{stem}.jpg</filename>"]
    for o in objects:
        x1, y1, x2, y2 = o["box"]
        parts.append(f"  <object>\n    <name>{o['name']}</name>\n    <pose>Unspecified</pose>\n"
                     f"    <truncated>{o['truncated']}</truncated>\n"
                     f"    <difficult>{o['difficult']}</difficult>\n"
                     f"    <bndbox><xmin>{x1 + 1!r}</xmin><ymin>{y1 + 1!r}</ymin>"
                     f"<xmax>{x2!r}</xmax><ymax>{y2!r}</ymax></bndbox>\n  </object>")
    return "\n".join([*parts, "</annotation>\n"])


def _palette_mask(size: tuple[int, int], objects: list[dict[str, Any]], classes: list[str]) -> np.ndarray:
    """VOC-style: each box a class-index (id + 1) rectangle with a 255 boundary; one unknown pixel."""
    w, h = size
    ids = np.zeros((h, w), dtype=np.uint8)
    for o in objects:
        x1, y1, x2, y2 = (int(round(v)) for v in o["clipped"])
        ids[y1:y2, x1:x2] = 255
        ids[y1 + 2:y2 - 2, x1 + 2:x2 - 2] = classes.index(o["name"]) + 1
    ids[0, 0] = UNKNOWN_PIXEL
    return ids


@pytest.fixture(scope="module")
def source(real_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A VOC tree (9 labelled images, 1 background, 1 orphan xml, 3 masks) and a text list, same images."""
    coco = real_data / "detection" / "coco128"
    names = yaml.safe_load((coco / "config.yaml").read_text())["names"]
    labelled = [p.stem for p in sorted((coco / "labels" / "train2017").glob("*.txt"))[:9]]
    root = tmp_path_factory.mktemp("voc") / "VOC"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main", "SegmentationClass"):
        (root / sub).mkdir(parents=True)
    objects = {stem: _objects(coco, stem, names) for stem in [*labelled, BACKGROUND]}
    assert objects[BACKGROUND] == [] and all(objects[s] for s in labelled)
    for stem in [*labelled, BACKGROUND]:
        # copies: the engine resolves symlinks, and a link into shared/data would leave the root
        shutil.copy(coco / "images" / "train2017" / f"{stem}.jpg", root / "JPEGImages")
    for stem in labelled:
        (root / "Annotations" / f"{stem}.xml").write_text(_voc_xml(stem, objects[stem]))
    orphan = [{**objects[labelled[0]][0], "difficult": 0, "truncated": 0}]
    (root / "Annotations" / f"{ORPHAN}.xml").write_text(_voc_xml(ORPHAN, orphan))
    split = {**{s: "train" for s in [*labelled[:6], BACKGROUND, ORPHAN]}, **{s: "val" for s in labelled[6:]}}
    for name in ("train", "val"):
        (root / "ImageSets" / "Main" / f"{name}.txt").write_text("".join(f"{s}\n" for s, v in split.items()
                                                                        if v == name))
    classes = sorted({o["name"] for stem in [*labelled, ORPHAN] for o in (objects.get(stem) or orphan)})
    masks = {}
    for stem in labelled[:MASKED]:
        with Image.open(root / "JPEGImages" / f"{stem}.jpg") as im:
            masks[stem] = _palette_mask(im.size, objects[stem], classes)
        png = Image.fromarray(masks[stem], mode="P")
        png.putpalette([v for i in range(256) for v in (i * 7 % 256, i * 13 % 256, i * 29 % 256)])
        png.save(root / "SegmentationClass" / f"{stem}.png")
    return {"root": root, "objects": objects, "split": split, "classes": classes, "masks": masks,
            "labelled": labelled, "names": names, "coco": coco}


def _shards(out: Path) -> dict[str, tuple[str, dict[str, Any]]]:
    """stem -> (split, sample) over every split of a shard set."""
    found = {}
    for split in read_meta(out).splits:
        for s in ShardDataset(root=out, split=split):
            found[Path(s["ann"]["source"]).stem] = (split, s)
    return found


def test_voc_round_trip(source: dict[str, Any], tmp_path: Path) -> None:
    root, out = source["root"], tmp_path / "voc_shards"
    main = root / "ImageSets" / "Main"
    result = run_cli("objmtl-data", "convert", "--format", "voc", "--src", str(root), "--out", str(out),
                     "--masks", "SegmentationClass", "--split-file", f"train={main / 'train.txt'}",
                     "--split-file", f"val={main / 'val.txt'}")
    assert result.returncode == 0, result.stderr
    objects, labelled = source["objects"], source["labelled"]
    n_boxes = sum(len(objects[s]) for s in labelled)
    n_clipped = sum(o["box"] != o["clipped"] for s in labelled for o in objects[s])
    report = json.loads((out / "report.json").read_text())
    assert report["images_read"] == 10 and report["samples_written"] == {"train": 7, "val": 3}
    assert report["images_dropped"] == 0 and report["label_files_without_image"] == 1  # the orphan xml
    assert report["instances_read"] == report["instances_written"] == n_boxes
    fixed = {"image without label file (kept as background)": 1,
             "mask pixels with no class (set to ignore)": MASKED}
    if n_clipped:
        fixed["box clipped to the image"] = n_clipped
    assert report["fixed"] == fixed and report["dropped"] == {}

    meta = read_meta(out)
    assert meta.classes == source["classes"]  # COCO names are not all VOC's: the sorted names seen
    assert meta.tasks == ["det", "seg"] and meta.mask_classes == ["background", *source["classes"]]
    shards = _shards(out)
    assert set(shards) == {*labelled, BACKGROUND}
    for stem, (split, sample) in shards.items():
        assert split == source["split"][stem], stem
        ann, want = sample["ann"], objects[stem]
        assert [meta.classes[c] for c in ann["classes"]] == [o["name"] for o in want]
        np.testing.assert_allclose(np.array(ann["boxes"]).reshape(-1, 4),
                                   np.array([o["clipped"] for o in want]).reshape(-1, 4), rtol=0, atol=1e-6)
        assert ann["difficult"] == [o["difficult"] for o in want]
        assert ann["truncated"] == [o["truncated"] for o in want]
        if stem in source["masks"]:
            expected = np.where(source["masks"][stem] == UNKNOWN_PIXEL, 255, source["masks"][stem])
            np.testing.assert_array_equal(sample["mask"], expected)
            assert sample["image"].shape[:2] == expected.shape
        else:
            assert sample["mask"] is None
    assert any(sum(s["ann"]["difficult"]) for _, s in shards.values())
    assert any(sum(s["ann"]["truncated"]) for _, s in shards.values())


def test_text_round_trip(source: dict[str, Any], tmp_path: Path) -> None:
    """train.txt in the all-whitespace form, val.txt in the ``path x1,y1,x2,y2,cls`` form."""
    root, objects, labelled = source["root"], source["objects"], source["labelled"]
    lists = tmp_path / "lists"
    lists.mkdir()
    train = [*labelled[:6], BACKGROUND]
    spaced = {s: " ".join(repr(v) for o in objects[s] for v in [*o["box"], o["id"]]) for s in train}
    commas = {s: " ".join(",".join(map(repr, [*o["box"], o["id"]])) for o in objects[s])
              for s in labelled[6:]}
    lines = {"train": [f"JPEGImages/{s}.jpg {spaced[s]}" for s in train],
             "val": [f"JPEGImages/{s}.jpg {commas[s]}" for s in labelled[6:]]}
    for split, text in lines.items():
        (lists / f"{split}.txt").write_text("\n".join(text) + "\n")
    out = tmp_path / "text_shards"
    result = run_cli("objmtl-data", "convert", "--format", "text", "--src", str(root), "--out", str(out),
                     "--ann", f"train={lists / 'train.txt'}", "--ann", f"val={lists / 'val.txt'}",
                     "--names", str(source["coco"] / "config.yaml"))
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["images_read"] == 10 and report["samples_written"] == {"train": 7, "val": 3}
    assert report["instances_written"] == sum(len(objects[s]) for s in labelled)
    meta = read_meta(out)
    assert meta.classes == [source["names"][i] for i in range(80)] and meta.tasks == ["det"]
    shards = _shards(out)
    assert {s: v for s, (v, _) in shards.items()} == {**{s: "train" for s in train},
                                                     **{s: "val" for s in labelled[6:]}}
    for stem, (_, sample) in shards.items():
        assert sample["ann"]["classes"] == [o["id"] for o in objects[stem]]
        np.testing.assert_allclose(np.array(sample["ann"]["boxes"]).reshape(-1, 4),
                                   np.array([o["clipped"] for o in objects[stem]]).reshape(-1, 4), atol=1e-6)
        assert sample["mask"] is None


def test_text_separator_and_ratio_split(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"")
    (tmp_path / "b c.jpg").write_bytes(b"")
    lst = tmp_path / "all.csv"
    lst.write_text("a.jpg,1,2,30,40,2\n# a comment\n\nb c.jpg ,5, 6 ,7,8,0,\n")
    conv = read_text_lists(tmp_path, lists={"train": lst}, separator=",", val_fraction=0.5, seed=3)
    samples = sorted(conv.samples, key=lambda s: str(s.image))
    assert [s.image.name for s in samples] == ["a.jpg", "b c.jpg"]
    assert samples[0].ann == {"boxes": [[1.0, 2.0, 30.0, 40.0]], "classes": [2]}
    assert samples[1].ann == {"boxes": [[5.0, 6.0, 7.0, 8.0]], "classes": [0]}
    assert sorted(s.split for s in samples) == ["train", "val"] and conv.meta.classes == ["0", "1", "2"]
    assert samples[0].where == f"{lst}:1" and samples[1].where == f"{lst}:4"


def test_text_unknown_class_id_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "names.txt").write_text("cat\ndog\n")
    (tmp_path / "l.txt").write_text("a.jpg 1 2 3 4 1\na.jpg 1 2 3 4 7\n")
    with pytest.raises(UserError, match=r"l\.txt:2: class id 7 is not a known class \(known: 0=cat, 1=dog\)"):
        read_text_lists(tmp_path, lists={"train": tmp_path / "l.txt"}, classes=["cat", "dog"])


def _tiny_voc(root: Path, names: list[str]) -> None:
    (root / "Annotations").mkdir(parents=True)
    objs = "".join(f"<object><name>{n}</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax>"
                   f"<ymax>5</ymax></bndbox></object>" for n in names)
    (root / "Annotations" / "x.xml").write_text(f"<annotation><filename>x.jpg</filename>{objs}</annotation>")


def test_voc_class_rules(tmp_path: Path) -> None:
    _tiny_voc(tmp_path / "a", ["dog", "person"])
    conv = read_voc(tmp_path / "a", val_fraction=0.0)
    assert conv.meta.classes == VOC_CLASSES and len(VOC_CLASSES) == 20
    (sample,) = conv.samples
    assert sample.ann["classes"] == [11, 14] and sample.ann["boxes"][0] == [0.0, 0.0, 5.0, 5.0]
    assert sample.image is None  # no JPEGImages/x.jpg: counted by the engine as a label without image
    _tiny_voc(tmp_path / "b", ["zebra", "dog"])
    assert read_voc(tmp_path / "b", val_fraction=0.0).meta.classes == ["dog", "zebra"]
    message = r"x\.xml: class 'zebra' is not a known class \(known: 0=dog, 1=cat\)"
    with pytest.raises(UserError, match=message):
        read_voc(tmp_path / "b", classes=["dog", "cat"], val_fraction=0.0)
