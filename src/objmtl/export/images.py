"""Images to run a model on: a file, a folder of files, or a shard set (``objmtl-predict``, ``--verify``).

Each item is ``(name, H x W x 3 uint8 RGB)``. A file that is not a decodable image is counted and
reported by name (:attr:`ImageSource.skipped`), never a crash in the middle of a folder; a single
file named on the command line that can't be read is an error naming it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from objmtl.data.convert.image_folder import IMAGE_SUFFIXES
from objmtl.errors import UserError

__all__ = ["ImageSource", "read_image"]


def read_image(path: str | Path) -> np.ndarray:
    """H x W x 3 uint8 RGB of an image file; a :class:`UserError` naming it when it can't be read."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise UserError(f"{path}: no such image file") from None
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        raise UserError(f"{path}: not a readable image ({type(e).__name__})") from None


class ImageSource:
    """Iterates ``(name, image)`` over a file, a folder (its image files, recursively, sorted) or a shard set.

    Args:
        path: an image file, a folder, or a shard folder (with ``meta.json``).
        split: the split read from a shard set (default: ``test`` if it has one, else ``val``).
        limit: at most this many images (None: all).
        exclude: folders inside ``path`` not to read (the predictor's own output).
    """

    def __init__(self, path: str | Path, *, split: str | None = None, limit: int | None = None,
                 exclude: tuple[Path, ...] = ()) -> None:
        self.path, self.split, self.limit = Path(path), split, limit
        self.exclude = tuple(Path(x).resolve() for x in exclude)
        self.skipped: list[str] = []
        if not self.path.exists():
            raise UserError(f"{self.path}: no such file or folder")

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        for count, (name, image) in enumerate(self._items()):
            if self.limit is not None and count >= self.limit:
                return
            yield name, image

    def _items(self) -> Iterator[tuple[str, np.ndarray]]:
        if self.path.is_file():
            yield self.path.stem, read_image(self.path)
            return
        if (self.path / "meta.json").is_file():
            yield from self._shards()
            return
        files = sorted(p for p in self.path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                       and not any(p.resolve().is_relative_to(x) for x in self.exclude))
        if not files:
            raise UserError(f"{self.path}: no image files inside")
        for p in files:
            try:
                yield str(p.relative_to(self.path).with_suffix("")), read_image(p.resolve())
            except UserError:
                self.skipped.append(str(p))

    def _shards(self) -> Iterator[tuple[str, np.ndarray]]:
        from objmtl.data.schema import read_meta
        from objmtl.data.shard_reader import ShardDataset

        meta = read_meta(self.path)
        split = self.split or ("test" if meta.count("test") else "val" if meta.count("val") else "train")
        for sample in ShardDataset(root=self.path, split=split, on_decode_error="warn"):
            image_id = sample["ann"].get("image_id")
            yield (str(image_id) if image_id is not None else str(sample["key"])), sample["image"]
