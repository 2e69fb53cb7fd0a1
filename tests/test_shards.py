"""Shard writer and reader: round trip of every annotation kind, and bad input."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from objmtl.data.schema import SCHEMA_VERSION, KeypointSpec, Meta, read_meta
from objmtl.data.shard_reader import ShardDataset
from objmtl.data.shard_writer import ShardSetWriter
from objmtl.errors import UserError
from tests.helpers import corrupt_member


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _meta() -> Meta:
    return Meta(classes=["cat", "dog", "猫"], tasks=["cls", "det", "seg", "pose"],
                mask_classes=["background", "cat", "dog"],
                keypoints=KeypointSpec(names=["a", "b"], skeleton=[[0, 1]], flip_pairs=[[0, 1]],
                                       sigmas=[0.1, 0.2]))


def _samples(n: int) -> list[dict]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        image = rng.integers(0, 255, (20 + i, 30, 3), dtype=np.uint8)
        mask = rng.integers(0, 3, (20 + i, 30), dtype=np.uint8)
        mask[0, 0] = 255
        ann = {"label": i % 3, "boxes": [[1.0, 2.0, 10.5, 12.0], [0, 0, 5, 5]], "classes": [0, 2],
               "iscrowd": [0, 1], "area": [80.0, 25.0], "difficult": [0, 1], "truncated": [1, 0],
               "polygons": [[[1, 2, 10, 2, 10, 12]], [[0, 0, 5, 0, 5, 5]]],
               "keypoints": [[[3, 4, 2], [5, 6, 1]], [[0, 0, 0], [1, 1, 2]]],
               "image_id": i, "width": 30, "height": 20 + i, "source": f"img{i}.png"}
        out.append({"image": image, "mask": mask, "ann": ann})
    return out


def test_round_trip_every_annotation_kind(tmp_path: Path) -> None:
    samples = _samples(7)
    with ShardSetWriter(tmp_path / "s", meta=_meta(), max_count=3) as w:
        for s in samples:
            w.write("train", image=_png(s["image"]), ext="png", ann=s["ann"], mask=_png(s["mask"]))
    meta = read_meta(tmp_path / "s")
    assert meta.schema_version == SCHEMA_VERSION
    assert [s.count for s in meta.splits["train"]] == [3, 3, 1]
    assert meta.classes[2] == "猫" and meta.num_keypoints == 2 and meta.keypoints.sigmas == [0.1, 0.2]
    got = list(ShardDataset(root=tmp_path / "s", split="train"))
    assert len(got) == 7
    for s, g in zip(samples, got, strict=True):
        np.testing.assert_array_equal(g["image"], s["image"])
        np.testing.assert_array_equal(g["mask"], s["mask"])
        assert g["ann"] == s["ann"]


def test_writer_is_atomic_on_failure(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), ShardSetWriter(tmp_path / "s", meta=_meta()) as w:
        w.write("train", image=_png(np.zeros((4, 4, 3), np.uint8)), ext="png", ann={"label": 0})
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_writer_rejects_bad_annotation(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="class 5"), ShardSetWriter(tmp_path / "s", meta=_meta()) as w:
        w.write("train", image=b"x", ext="png", ann={"boxes": [[0, 0, 1, 1]], "classes": [5]})


def test_unknown_schema_version_is_refused_and_version_1_is_read(tmp_path: Path) -> None:
    root = tmp_path / "s"
    with ShardSetWriter(root, meta=_meta()) as w:
        w.write("train", image=_png(np.zeros((4, 4, 3), np.uint8)), ext="png", ann={"label": 0})
    raw = json.loads((root / "meta.json").read_text())
    raw["schema_version"] = 99
    (root / "meta.json").write_text(json.dumps(raw))
    with pytest.raises(UserError, match=r"schema version 99 .* \(1, 2\)"):
        read_meta(root)
    raw.update(schema_version=1, tasks=["det", "seg"])  # version 1 kept instance outlines as polygons
    (root / "meta.json").write_text(json.dumps(raw))
    meta = read_meta(root)
    assert meta.schema_version == 1 and meta.tasks == ["det", "seg", "inst"]
    raw["tasks"] = ["cls"]
    (root / "meta.json").write_text(json.dumps(raw))
    assert read_meta(root).tasks == ["cls"]


def test_missing_paths_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such shard folder"):
        read_meta(tmp_path / "nope")
    (tmp_path / "nometa" / "train").mkdir(parents=True)
    with pytest.raises(UserError, match=r"meta.json: missing"):
        ShardDataset(root=tmp_path / "nometa", split="train")
    root = tmp_path / "s"
    with ShardSetWriter(root, meta=_meta()) as w:
        w.write("train", image=_png(np.zeros((4, 4, 3), np.uint8)), ext="png", ann={"label": 0})
    with pytest.raises(UserError, match="has no samples"):
        ShardDataset(root=root, split="val")
    (root / "train" / "000000.tar").unlink()
    with pytest.raises(UserError, match="000000.tar: shard listed in meta.json is missing"):
        ShardDataset(root=root, split="train")


def test_undecodable_image_is_skipped_and_counted(tmp_path: Path) -> None:
    root = tmp_path / "s"
    with ShardSetWriter(root, meta=_meta()) as w:
        for i in range(5):
            w.write("train", image=_png(np.full((8, 8, 3), i, np.uint8)), ext="png", ann={"label": 0})
    corrupt_member(root / "train" / "000000.tar", "000000002.png")
    ds = ShardDataset(root=root, split="train")
    keys = [s["key"] for s in ds]
    assert keys == ["000000000", "000000001", "000000003", "000000004"]
    assert ds.pop_skipped() == 1 and ds.pop_skipped() == 0
    # training (shuffled): the slot is filled by another good sample, so the epoch keeps its length
    train = ShardDataset(root=root, split="train", shuffle=True, shuffle_buffer=2)
    keys = [s["key"] for s in train]
    assert len(keys) == len(train) == 5 and "000000002" not in keys and len(set(keys)) == 4
    assert train.pop_skipped() == 1
    strict = ShardDataset(root=root, split="train", on_decode_error="raise")
    with pytest.raises(UserError, match=r"000000.tar: sample 000000002: cannot decode"):
        list(strict)


@pytest.mark.parametrize("fmt", ["ustar", "gnu", "pax"])
def test_tar_reader_follows_every_header_format(tmp_path: Path, fmt: str) -> None:
    import tarfile

    from objmtl.data.shard_reader import iter_shard

    path = tmp_path / "x.tar"
    long_dir = "d" * 120  # longer than a ustar name field: GNU long names / pax paths / ustar prefix
    fmt_id = {"ustar": tarfile.USTAR_FORMAT, "gnu": tarfile.GNU_FORMAT, "pax": tarfile.PAX_FORMAT}[fmt]
    with tarfile.open(path, "w", format=fmt_id) as tar:
        for key in ("a1", "a2", "a3"):
            for ext, data in (("json", b'{"label": 0}'), ("png", key.encode() * 300)):
                info = tarfile.TarInfo(f"{long_dir}/{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    got = list(iter_shard(str(path)))
    assert [s["__key__"] for s in got] == ["a1", "a2", "a3"]
    assert got[1]["png"] == b"a2" * 300 and got[1]["json"] == b'{"label": 0}'
    assert [s["__key__"] for s in iter_shard(str(path), 1, 2)] == ["a2"]


def test_corrupt_or_truncated_tar_is_one_clear_error(tmp_path: Path) -> None:
    from objmtl.data.shard_reader import iter_shard

    root = tmp_path / "s"
    with ShardSetWriter(root, meta=_meta()) as w:
        for i in range(3):
            w.write("train", image=_png(np.full((16, 16, 3), i, np.uint8)), ext="png", ann={"label": 0})
    shard = root / "train" / "000000.tar"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=r"000000.tar: unreadable shard \(tar ends (inside|without)"):
        list(iter_shard(str(shard)))
    shard.write_bytes(b"this is not a tar file at all" * 40)
    with pytest.raises(UserError, match="000000.tar: unreadable shard"):
        list(iter_shard(str(shard)))
