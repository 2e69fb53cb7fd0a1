"""The conversion engine's account: every image and instance is written or dropped, by reason."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from objmtl.data import ShardDataset, read_meta
from objmtl.data.convert.engine import (
    BOX_CLIPPED,
    BOX_DEGENERATE,
    KPT_OUTSIDE,
    NO_IMAGE,
    NO_LABEL,
    NON_FINITE,
    OUTSIDE_ROOT,
    POLY_NON_FINITE,
    POLY_SHORT,
    UNDECODABLE,
    WITH_IMAGE,
    Conversion,
    SourceSample,
    run_conversion,
)
from objmtl.data.schema import KeypointSpec, Meta
from objmtl.errors import UserError

NAN = float("nan")


@pytest.fixture
def source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(src / "a.png")
    (src / "bad.jpg").write_bytes(b"not an image")
    return src


def _samples(src: Path) -> list[SourceSample]:
    ann = {"boxes": [[-5, 2, 10, 12], [5, 5, 5, 9], [NAN, 0, 1, 1], [1, 1, 40, 40]], "classes": [0, 1, 0, 1],
           "polygons": [[[0, 0, 10, 0, 10, 10]], [[1, 1, 2, 2]], [[0, 0, 1, 1, 1, 0]], [[1, 1, 50, 1, NAN, 50], [1, 1]]],
           "keypoints": [[[1, 1, 2], [100, 1, 2]], [[0, 0, 0]] * 2, [[0, 0, 0]] * 2, [[1, 1, NAN], [2, 2, 2]]]}
    return [SourceSample(split="train", image=src / "a.png", ann=ann),
            SourceSample(split="train", image=src / "bad.jpg", ann={"boxes": [[0, 0, 1, 1]] * 2, "classes": [0, 0]}),
            SourceSample(split="train", image=None, where="orphan.txt"),
            SourceSample(split="val", image=src / "a.png", ann={}, events=[NO_LABEL]),
            SourceSample(split="val", image=src / ".." / ".." / "a.png", ann={})]


def _meta() -> Meta:
    return Meta(classes=["x", "y"], tasks=["det"], keypoints=KeypointSpec(names=["p", "q"]))


@pytest.mark.parametrize("workers", [0, 2])
def test_every_image_and_instance_is_accounted_for(source: Path, tmp_path: Path, workers: int) -> None:
    conv = Conversion(meta=_meta(), samples=_samples(source), root=source,
                      events=Counter({"image dropped by the reader": 2}))
    report = run_conversion(conv, tmp_path / "out", workers=workers, progress=False).to_dict()
    assert report["images_read"] == 6 and report["images_dropped"] == 4
    assert report["samples_written"] == {"train": 1, "val": 1}
    assert report["instances_read"] == 6 and report["instances_written"] == 2
    assert report["label_files_without_image"] == 1
    assert report["dropped"] == {BOX_DEGENERATE: 1, NON_FINITE: 1, UNDECODABLE: 1, WITH_IMAGE: 2,
                                 OUTSIDE_ROOT: 1, "image dropped by the reader": 2}
    assert report["fixed"] == {BOX_CLIPPED: 2, POLY_NON_FINITE: 1, POLY_SHORT: 1, KPT_OUTSIDE: 1, NO_LABEL: 1}
    assert NO_IMAGE not in report["dropped"]
    (sample,) = ShardDataset(root=tmp_path / "out", split="train")
    ann = sample["ann"]
    assert ann["boxes"] == [[0.0, 2.0, 10.0, 12.0], [1.0, 1.0, 30.0, 20.0]]
    assert ann["polygons"] == [[[0.0, 0.0, 10.0, 0.0, 10.0, 10.0]], []]
    assert ann["keypoints"] == [[[1.0, 1.0, 2], [0.0, 0.0, 0]], [[1.0, 1.0, 1], [2.0, 2.0, 2]]]
    assert (ann["width"], ann["height"]) == (30, 20)
    assert read_meta(tmp_path / "out").count("train") == 1


def test_strict_refuses_and_leaves_nothing(source: Path, tmp_path: Path) -> None:
    conv = Conversion(meta=_meta(), samples=_samples(source), root=source)
    with pytest.raises(UserError, match=r"a.png: box clipped to the image \(--strict"):
        run_conversion(conv, tmp_path / "out", workers=0, strict=True, progress=False)
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["src"]


def test_list_files_relative_to_src_and_image_folder_layout_checks(tmp_path: Path) -> None:
    from tests.helpers import run_cli

    src = tmp_path / "src"
    for cls in ("a", "b"):
        (src / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((8, 8, 3), i, np.uint8)).save(src / cls / f"{i}.png")
    (src / "a" / "notes.txt").write_text("not an image")
    (src / "train.txt").write_text("".join(f"{c}/{i}.png {c}\n" for c in "ab" for i in range(3)) + "a/9.png a\n")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    result = run_cli("objmtl-data", "convert", "--format", "list", "--src", str(src), "--ann", "train=train.txt",
                     "--val-fraction", "0", "--out", str(tmp_path / "list"), cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    report = __import__("json").loads((tmp_path / "list" / "report.json").read_text())
    assert report["samples_written"] == {"train": 6} and report["label_files_without_image"] == 1
    from objmtl.data.convert.engine import NOT_IMAGE_FILE
    from objmtl.data.convert.image_folder import read_image_folder

    conv = read_image_folder(src, val_fraction=0)
    assert conv.events == Counter({NOT_IMAGE_FILE: 1}) and conv.meta.classes == ["a", "b"]
    (src / "c").mkdir()
    with pytest.raises(UserError, match="class folder.s. without images: c"):
        read_image_folder(src)
