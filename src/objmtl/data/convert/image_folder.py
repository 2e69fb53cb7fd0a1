"""ImageFolder trees (``[split/]class/image``) -> a classification shard set."""

from __future__ import annotations

import io
import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from objmtl.data.schema import SPLITS, Meta
from objmtl.data.shard_writer import ShardSetWriter
from objmtl.errors import UserError

__all__ = ["IMAGE_SUFFIXES", "convert_image_folder"]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _encode(path: Path) -> tuple[bytes, str, int, int]:
    """Keeps JPEG and PNG bytes as they are; other formats become PNG. Raises on undecodable files."""
    raw = path.read_bytes()
    with Image.open(io.BytesIO(raw)) as im:
        im.load()
        fmt, (w, h) = im.format, im.size
        if fmt in ("JPEG", "PNG"):
            return raw, "jpg" if fmt == "JPEG" else "png", w, h
        buf = io.BytesIO()
        im.convert("RGB").save(buf, format="PNG")
        return buf.getvalue(), "png", w, h


def _stratified(items: list[tuple[Path, int]], fraction: float, seed: int) -> tuple[list, list]:
    """Per class, ``round(n * fraction)`` items (seeded) go to the second list."""
    rng = np.random.default_rng(seed)
    keep, carve = [], []
    by_class: dict[int, list[tuple[Path, int]]] = {}
    for item in items:
        by_class.setdefault(item[1], []).append(item)
    for label in sorted(by_class):
        group = by_class[label]
        order = rng.permutation(len(group))
        k = int(round(len(group) * fraction))
        carve += [group[i] for i in order[:k]]
        keep += [group[i] for i in order[k:]]
    return keep, carve


def convert_image_folder(src: str | Path, out: str | Path, *, val_fraction: float = 0.2,
                         test_fraction: float = 0.0, seed: int = 0, max_count: int = 1000,
                         overwrite: bool = False, progress: bool = True) -> dict:
    """Converts ``src/{train,val,test}/CLASS/*`` or ``src/CLASS/*`` into shards at ``out``.

    With split folders they are kept; a split that is missing is carved from train by
    ``val_fraction`` / ``test_fraction``, stratified per class with ``seed``. Without split
    folders every split is carved that way. Class ids follow the sorted class folder names.
    Undecodable images are dropped and counted. Returns the report written to ``out/report.json``.
    """
    src = Path(src)
    if not src.is_dir():
        raise UserError(f"{src}: no such folder")
    split_dirs = {s: src / s for s in SPLITS if (src / s).is_dir()}
    class_roots = list(split_dirs.values()) or [src]
    classes = sorted({d.name for root in class_roots for d in _class_dirs(root)})
    if not classes:
        raise UserError(f"{src}: no class folders (expected {src}/CLASS/IMAGE or {src}/train/CLASS/IMAGE)")
    index = {c: i for i, c in enumerate(classes)}

    def listing(root: Path) -> list[tuple[Path, int]]:
        return [(p, index[d.name]) for d in _class_dirs(root) for p in _images(d)]

    splits = {s: listing(d) for s, d in split_dirs.items()} if split_dirs else {"train": listing(src)}
    if "test" not in splits and test_fraction > 0:
        splits["train"], splits["test"] = _stratified(splits.get("train", []), test_fraction, seed)
    if "val" not in splits and val_fraction > 0:
        frac = val_fraction / max(1e-9, 1 - (test_fraction if "test" not in split_dirs else 0))
        splits["train"], splits["val"] = _stratified(splits.get("train", []), frac, seed + 1)
    total = sum(len(v) for v in splits.values())
    if total == 0:
        raise UserError(f"{src}: no images with suffixes {', '.join(sorted(IMAGE_SUFFIXES))}")

    dropped: Counter[str] = Counter()
    written: Counter[str] = Counter()
    meta = Meta(classes=classes, tasks=["cls"], source=f"imagefolder:{src.name}")
    bar = tqdm(total=total, desc=f"convert {src.name}", unit="img", disable=not progress)
    with ShardSetWriter(out, meta=meta, max_count=max_count, overwrite=overwrite) as writer:
        for split, items in splits.items():
            for path, label in items:
                bar.update()
                try:
                    data, ext, w, h = _encode(path)
                except (OSError, ValueError, Image.DecompressionBombError) as e:
                    log.warning("%s: dropped, cannot decode (%s)", path, e)
                    dropped["image that can't be decoded"] += 1
                    continue
                writer.write(split, image=data, ext=ext, ann={"label": label, "width": w, "height": h,
                                                              "source": str(path.relative_to(src))})
                written[split] += 1
    bar.close()
    report = {"images_read": total, "samples_written": dict(written), "dropped": dict(dropped),
              "classes": classes}
    (Path(out) / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    return report
