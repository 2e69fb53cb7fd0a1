"""Writes a shard set (``ROOT/meta.json`` + ``ROOT/{split}/NNNNNN.tar``) in one atomic step."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from objmtl.data.schema import SPLITS, Meta, ShardInfo, validate_annotation, write_meta
from objmtl.errors import UserError

__all__ = ["ShardSetWriter"]


class _SplitWriter:
    """Rotates tar files of one split when a count or byte bound is reached."""

    def __init__(self, folder: Path, *, max_count: int, max_bytes: int) -> None:
        self.folder = folder
        self.max_count, self.max_bytes = max_count, max_bytes
        self.shards: list[ShardInfo] = []
        self._tar: tarfile.TarFile | None = None
        self._count = self._bytes = 0
        self.total = 0

    def write(self, sample: dict[str, Any], nbytes: int) -> None:
        if self._tar is None or self._count >= self.max_count or self._bytes + nbytes > self.max_bytes:
            self._rotate()
        assert self._tar is not None
        key = sample["__key__"]
        for ext, data in sample.items():
            if ext == "__key__":
                continue
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size, info.mode, info.mtime = len(data), 0o444, 0
            self._tar.addfile(info, io.BytesIO(data))
        self._count += 1
        self._bytes += nbytes
        self.total += 1

    def _rotate(self) -> None:
        self._close_current()
        name = f"{len(self.shards):06d}.tar"
        self.folder.mkdir(parents=True, exist_ok=True)
        # GNU headers: one per member (pax adds a second, which doubles the reader's header work).
        # tarfile itself, not webdataset's TarWriter: that one ignores its format argument.
        self._tar = tarfile.open(self.folder / name, "w", format=tarfile.GNU_FORMAT)  # noqa: SIM115 - closed on rotate
        self.shards.append(ShardInfo(file=name, count=0))
        self._count = self._bytes = 0

    def _close_current(self) -> None:
        if self._tar is not None:
            self._tar.close()
            self.shards[-1].count = self._count
            self._tar = None

    def close(self) -> list[ShardInfo]:
        self._close_current()
        return self.shards


class ShardSetWriter:
    """Writes samples into a temporary folder beside ``root`` and renames it into place on close.

    Nothing is left at ``root`` if writing fails or is interrupted: the partial folder is removed.

    Example::

        with ShardSetWriter("shards/", meta=Meta(classes=["cat", "dog"], tasks=["cls"])) as w:
            w.write("train", image=jpeg_bytes, ext="jpg", ann={"label": 1})
    """

    def __init__(self, root: str | Path, *, meta: Meta, max_count: int = 1000,
                 max_bytes: int = 256 * 2**20, overwrite: bool = False) -> None:
        self.root = Path(root)
        if self.root.exists() and not overwrite:
            raise UserError(f"{self.root}: already exists (--overwrite replaces it)")
        self.meta = meta
        self.max_count, self.max_bytes = max_count, max_bytes
        self.overwrite = overwrite
        self.root.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.root.name}.partial-", dir=self.root.parent))
        self._splits: dict[str, _SplitWriter] = {}

    def write(self, split: str, *, image: bytes, ext: str, ann: dict[str, Any],
              mask: bytes | None = None) -> str:
        """Adds one sample; returns its key. ``ext`` is the image format: ``jpg`` or ``png``."""
        if split not in SPLITS:
            raise ValueError(f"split {split!r} is not one of {SPLITS}")
        if ext not in ("jpg", "png"):
            raise ValueError(f"image ext {ext!r} is not jpg or png")
        writer = self._splits.get(split)
        if writer is None:
            writer = self._splits[split] = _SplitWriter(self._tmp / split, max_count=self.max_count,
                                                        max_bytes=self.max_bytes)
        key = f"{writer.total:09d}"
        validate_annotation(ann, meta=self.meta, where=f"{split}/{key}")
        sample: dict[str, Any] = {"__key__": key, ext: image,
                                  "json": json.dumps(ann, separators=(",", ":")).encode()}
        if mask is not None:
            sample["mask.png"] = mask
        writer.write(sample, len(image) + len(sample["json"]) + len(mask or b""))
        return key

    def close(self) -> Meta:
        splits = {name: w.close() for name, w in self._splits.items()}
        meta = replace(self.meta, splits=splits)
        write_meta(self._tmp, meta)
        if self.root.exists():
            shutil.rmtree(self.root)
        self._tmp.rename(self.root)
        return meta

    def abort(self) -> None:
        for w in self._splits.values():
            w.close()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> ShardSetWriter:
        return self

    def __exit__(self, exc_type: type | None, *_: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
