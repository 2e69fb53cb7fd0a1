"""What every converter shares: validation with an exact account, parallel decoding, atomic writing.

A format reader turns its source into a :class:`Conversion`: the shard set's :class:`Meta` and a
stream of :class:`SourceSample` (an image path, its split, its annotation in source pixels, and
optionally a semantic mask file). :func:`run_conversion` then, in several processes, checks each
image decodes, clips or drops bad geometry, maps mask ids, and writes the shards. Every drop and
every fix is counted by reason, so that ``images read = samples written + images dropped`` and
``instances read = instances written + instances dropped``.
"""

from __future__ import annotations

import io
import json
import math
import multiprocessing as mp
import os
import signal
import warnings
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from objmtl.data.schema import IGNORE_INDEX, INSTANCE_KEYS, Meta
from objmtl.data.shard_writer import ShardSetWriter
from objmtl.errors import UserError

__all__ = ["Conversion", "ConversionReport", "SourceSample", "inside", "run_conversion"]

# reasons, as they appear in the report
UNDECODABLE = "image that can't be decoded"
BOMB = "image over Pillow's decompression-bomb limit"
OUTSIDE_ROOT = "annotation path leaves the data set root"
NO_IMAGE = "label file without image"
NO_LABEL = "image without label file (kept as background)"
BOX_CLIPPED = "box clipped to the image"
BOX_DEGENERATE = "degenerate box dropped"
NON_FINITE = "instance with NaN or infinite coordinates dropped"
POLY_SHORT = "polygon with fewer than 3 points dropped"
POLY_CLIPPED = "polygon clipped to the image"
POLY_NON_FINITE = "polygon with NaN or infinite coordinates dropped"
KPT_OUTSIDE = "keypoint outside the image (set to unlabelled)"
MASK_SIZE = "mask whose size differs from its image"
MASK_UNDECODABLE = "mask that can't be decoded"
MASK_UNKNOWN = "mask pixels with no class (set to ignore)"
WITH_IMAGE = "instances of a dropped image"
NOT_IMAGE_FILE = "file that is not an image (ignored)"

NO_CLASS = 254  # in a mask_lut: a source id that names no class (counted, then written as ignore)

# which reasons drop a whole image (the rest drop or fix parts of one, or concern no image at all)
IMAGE_DROPS = {UNDECODABLE, BOMB, OUTSIDE_ROOT, MASK_SIZE, MASK_UNDECODABLE}
INSTANCE_DROPS = {BOX_DEGENERATE, NON_FINITE, WITH_IMAGE}
IGNORED = {NO_IMAGE, NOT_IMAGE_FILE}  # files that are not images: counted apart from images read
FIXES = {NO_LABEL, BOX_CLIPPED, POLY_SHORT, POLY_CLIPPED, POLY_NON_FINITE, KPT_OUTSIDE, MASK_UNKNOWN}


@dataclass
class SourceSample:
    """One image of a source, before validation.

    Attributes:
        split: ``train``, ``val`` or ``test``.
        image: the image file; None for a label file whose image is missing (counted, dropped).
        ann: the annotation in source pixels (schema keys; instances as parallel lists).
        mask: the semantic mask of source ids (mapped by the conversion's ``mask_lut``): a PNG
            file, an HxW uint8 array, or a picklable callable returning one (rendered in the
            worker, so masks of a large set are never all in memory).
        where: the label file (or image) to name in messages.
        events: reasons the reader already found for this sample (e.g. no label file).
    """

    split: str
    image: Path | None
    ann: dict[str, Any] = field(default_factory=dict)
    mask: Path | np.ndarray | Callable[[], np.ndarray] | None = None
    where: str = ""
    events: list[str] = field(default_factory=list)


@dataclass
class Conversion:
    """A format reader's output: what to write, and what it already had to skip."""

    meta: Meta
    samples: Iterable[SourceSample]
    root: Path
    total: int | None = None
    mask_lut: np.ndarray | None = None  # 256 entries: source id -> training id (255 ignore, 254 no class)
    events: Counter[str] = field(default_factory=Counter)  # images the reader itself dropped, by reason


@dataclass
class ConversionReport:
    images_read: int = 0
    samples_written: Counter[str] = field(default_factory=Counter)
    instances_read: int = 0
    instances_written: int = 0
    events: Counter[str] = field(default_factory=Counter)

    @staticmethod
    def _drops_image(reason: str) -> bool:
        """Engine reasons are classified above; any other reason comes from a reader's own image drop."""
        return reason in IMAGE_DROPS or reason not in INSTANCE_DROPS | FIXES | IGNORED

    @property
    def images_dropped(self) -> int:
        return sum(n for r, n in self.events.items() if self._drops_image(r))

    def to_dict(self) -> dict[str, Any]:
        return {
            "images_read": self.images_read,
            "samples_written": dict(self.samples_written),
            "images_dropped": self.images_dropped,
            "instances_read": self.instances_read,
            "instances_written": self.instances_written,
            "instances_dropped": sum(n for r, n in self.events.items() if r in INSTANCE_DROPS),
            "label_files_without_image": self.events.get(NO_IMAGE, 0),
            "ignored": {r: n for r, n in self.events.items() if r in IGNORED},
            "dropped": {r: n for r, n in self.events.items() if self._drops_image(r) or r in INSTANCE_DROPS},
            "fixed": {r: n for r, n in self.events.items() if r in FIXES},
        }

    def check_balance(self) -> None:
        d = self.to_dict()
        if d["images_read"] != sum(d["samples_written"].values()) + d["images_dropped"]:
            raise AssertionError(f"images do not add up: {d}")
        if d["instances_read"] != d["instances_written"] + d["instances_dropped"]:
            raise AssertionError(f"instances do not add up: {d}")


# ---- per-sample work, run in worker processes ----


def inside(path: Path, root: Path) -> bool:
    """Lexically inside ``root`` (``..`` resolved, symlinks not): links placed in a data set stay allowed."""
    p, r = os.path.abspath(path), os.path.abspath(root)
    return p == r or p.startswith(r.rstrip(os.sep) + os.sep)


def _read_image(path: Path) -> tuple[bytes, str, int, int]:
    """Bytes kept as they are for JPEG and PNG (other formats become PNG), and the size."""
    raw = path.read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(raw)) as im:
            im.load()
            fmt, (w, h) = im.format, im.size
            if fmt in ("JPEG", "PNG") and im.mode in ("RGB", "L", "RGBA", "P", "LA", "I;16", "1", "CMYK", "I"):
                return raw, "jpg" if fmt == "JPEG" else "png", w, h
            buf = io.BytesIO()
            im.convert("RGB").save(buf, format="PNG")
            return buf.getvalue(), "png", w, h


def _finite(values: Iterable[Any]) -> bool:
    return all(isinstance(v, int | float) and math.isfinite(v) for v in values)


def _clean_instances(ann: dict[str, Any], w: int, h: int, events: list[str]) -> dict[str, Any]:
    """Clips boxes, polygons and keypoints to the image; drops what can't be kept; counts both."""
    n = len(ann.get("boxes", []))
    keep: list[int] = []
    for i in range(n):
        box = ann["boxes"][i]
        if len(box) != 4 or not _finite(box):
            events.append(NON_FINITE)
            continue
        x1, y1, x2, y2 = (float(v) for v in box)
        c = [min(max(x1, 0.0), float(w)), min(max(y1, 0.0), float(h)), min(max(x2, 0.0), float(w)),
             min(max(y2, 0.0), float(h))]
        if c[2] - c[0] <= 0 or c[3] - c[1] <= 0:  # zero width or height, or wholly outside
            events.append(BOX_DEGENERATE)
            continue
        if c != [x1, y1, x2, y2]:
            events.append(BOX_CLIPPED)
        ann["boxes"][i] = c
        keep.append(i)
    out = {k: v for k, v in ann.items() if k not in INSTANCE_KEYS}
    if "boxes" not in ann:
        return out
    for key in INSTANCE_KEYS:
        if key in ann:
            out[key] = [ann[key][i] for i in keep]
    if "polygons" in out:
        out["polygons"] = [_clean_rings(rings, w, h, events) for rings in out["polygons"]]
    if "keypoints" in out:
        out["keypoints"] = [_clean_keypoints(kps, w, h, events) for kps in out["keypoints"]]
    if "area" not in out:
        out["area"] = [_area(b, p) for b, p in zip(out["boxes"], out.get("polygons", [None] * len(keep)),
                                                     strict=True)]
    for key, default in (("iscrowd", 0), ("difficult", 0), ("truncated", 0)):
        out.setdefault(key, [default] * len(keep))
    return out


def _clean_rings(rings: list[list[float]], w: int, h: int, events: list[str]) -> list[list[float]]:
    kept = []
    for ring in rings:
        if not _finite(ring):
            events.append(POLY_NON_FINITE)
            continue
        if len(ring) < 6 or len(ring) % 2:
            events.append(POLY_SHORT)
            continue
        xy = np.asarray(ring, dtype=np.float64).reshape(-1, 2)
        clipped = np.clip(xy, 0, [w, h])
        if not np.array_equal(clipped, xy):
            events.append(POLY_CLIPPED)
        kept.append([round(float(v), 2) for v in clipped.ravel()])
    return kept


def _clean_keypoints(kps: list[list[float]], w: int, h: int, events: list[str]) -> list[list[float]]:
    out = []
    for x, y, v in kps:
        if not _finite((v,)):
            v = 1  # a visibility that is not a number: treat as labelled, so the position is checked
        if v and (not _finite((x, y)) or not (0 <= x <= w and 0 <= y <= h)):
            events.append(KPT_OUTSIDE)
            x, y, v = 0.0, 0.0, 0
        out.append([float(x), float(y), int(v)])
    return out


def _area(box: list[float], rings: list[list[float]] | None) -> float:
    if rings:
        total = 0.0
        for ring in rings:
            xy = np.asarray(ring).reshape(-1, 2)
            total += 0.5 * abs(np.dot(xy[:, 0], np.roll(xy[:, 1], 1)) - np.dot(xy[:, 1], np.roll(xy[:, 0], 1)))
        return round(total, 2)
    return round((box[2] - box[0]) * (box[3] - box[1]), 2)


def _read_mask(mask: Path | np.ndarray | Callable[[], np.ndarray], size: tuple[int, int],
               lut: np.ndarray | None, events: list[str]) -> bytes | None:
    try:
        if isinstance(mask, Path):
            with Image.open(mask) as m:
                ids = np.asarray(m if m.mode in ("L", "P") else m.convert("L"))
        else:
            ids = np.asarray(mask() if callable(mask) else mask)
    except (OSError, ValueError):
        events.append(MASK_UNDECODABLE)
        return None
    if ids.shape != (size[1], size[0]):
        events.append(MASK_SIZE)
        return None
    if lut is not None:
        mapped = lut[ids]
        unknown = mapped == NO_CLASS
        if unknown.any():
            events.append(MASK_UNKNOWN)
            mapped = np.where(unknown, IGNORE_INDEX, mapped).astype(np.uint8)
        ids = mapped
    buf = io.BytesIO()
    Image.fromarray(ids.astype(np.uint8), mode="L").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _prepare(sample: SourceSample, *, root: Path, lut: np.ndarray | None) -> dict[str, Any]:
    """Everything about one sample that can run in a worker: returns what to write, and the events."""
    events = list(sample.events)
    n_inst = len(sample.ann.get("boxes", []))
    result: dict[str, Any] = {"split": sample.split, "events": events, "n_read": n_inst,
                              "where": sample.where or str(sample.image or "")}
    if sample.image is None:
        result["orphan"] = True
        return result
    mask_file = sample.mask if isinstance(sample.mask, Path) else None
    if not inside(sample.image, root) or (mask_file is not None and not inside(mask_file, root)):
        events.append(OUTSIDE_ROOT)
        return result
    try:
        data, ext, w, h = _read_image(sample.image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        events.append(BOMB)
        return result
    except (OSError, ValueError, SyntaxError):
        events.append(UNDECODABLE)
        return result
    mask = None
    if sample.mask is not None:
        mask = _read_mask(sample.mask, (w, h), lut, events)
        if mask is None:
            return result
    ann = _clean_instances(dict(sample.ann), w, h, events)
    ann.update(width=w, height=h)
    ann.setdefault("source", str(sample.image.relative_to(root)) if inside(sample.image, root) else "")
    result.update(image=data, ext=ext, ann=ann, mask=mask)
    return result


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _results(conv: Conversion, workers: int) -> Iterator[dict[str, Any]]:
    work = partial(_prepare, root=conv.root, lut=conv.mask_lut)
    if workers <= 1:
        yield from map(work, conv.samples)
        return
    # apply_async with a bounded window, not Pool.imap: imap's feeder thread would pull the whole
    # sample stream into memory ahead of the workers
    # workers ignore Ctrl-C: the main process alone handles it and terminates them, since a pool
    # whose workers die of KeyboardInterrupt mid-task can leave the main process waiting forever
    with mp.get_context("fork").Pool(workers, initializer=_ignore_sigint) as pool:
        window: deque = deque()
        for sample in conv.samples:
            window.append(pool.apply_async(work, (sample,)))
            if len(window) >= 64 * workers:
                yield window.popleft().get()
        while window:
            yield window.popleft().get()


def run_conversion(conv: Conversion, out: str | Path, *, workers: int = 2, strict: bool = False,
                   overwrite: bool = False, max_count: int = 1000, progress: bool = True) -> ConversionReport:
    """Validates and writes ``conv`` to ``out`` (atomically); writes ``out/report.json``.

    With ``strict``, the first drop or fix of any kind raises a :class:`UserError` naming the
    file and the reason, and nothing is written.
    """
    report = ConversionReport(events=Counter(conv.events))
    report.images_read = sum(n for r, n in conv.events.items() if r not in IGNORED)  # read, then dropped
    if strict and conv.events:
        reason = next(iter(conv.events))
        raise UserError(f"{conv.root}: {reason} (--strict turns every drop into an error)")
    bar = tqdm(total=conv.total, desc=f"convert -> {Path(out).name}", unit="img", disable=not progress)
    try:
        _write_all(conv, out, report, bar, workers=workers, strict=strict, overwrite=overwrite, max_count=max_count)
    finally:
        bar.close()  # ends the bar's line, so an error message starts a line of its own
    report.check_balance()
    (Path(out) / "report.json").write_text(json.dumps(report.to_dict(), indent=1, ensure_ascii=False) + "\n")
    return report


def _write_all(conv: Conversion, out: str | Path, report: ConversionReport, bar: tqdm, *, workers: int,
               strict: bool, overwrite: bool, max_count: int) -> None:
    image_id = 0
    with ShardSetWriter(out, meta=conv.meta, max_count=max_count, overwrite=overwrite) as writer:
        for res in _results(conv, workers):
            bar.update()
            if res.get("orphan"):  # a label file without image: counted apart from the images
                report.events[NO_IMAGE] += 1
                if strict:
                    raise UserError(f"{res['where']}: {NO_IMAGE} (--strict turns every drop into an error)")
                continue
            report.images_read += 1
            report.instances_read += res["n_read"]
            report.events.update(res["events"])
            if strict and res["events"]:
                raise UserError(f"{res['where']}: {res['events'][0]} (--strict turns every drop into an error)")
            if "image" not in res:
                if res["n_read"]:
                    report.events[WITH_IMAGE] += res["n_read"]
                continue
            res["ann"].setdefault("image_id", image_id)
            image_id += 1
            writer.write(res["split"], image=res["image"], ext=res["ext"], ann=res["ann"], mask=res["mask"])
            report.samples_written[res["split"]] += 1
            report.instances_written += len(res["ann"].get("boxes", []))
