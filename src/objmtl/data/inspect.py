"""``objmtl-data inspect``: what a shard set holds, per split, in one streaming pass.

Counts come from ``meta.json``; everything else from reading the samples once, keeping only
counters (memory does not grow with the data set): image labels and instance classes per class,
instances per image, box areas (log-binned, and COCO small / medium / large), box aspect ratios,
image sizes, keypoint visibility and mask pixel shares. Image sizes are read from the image
headers, so images are not decoded; masks are decoded for their pixel counts.
"""

from __future__ import annotations

import argparse
import io
import json
from collections import Counter
from itertools import zip_longest
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from objmtl.data.parsers import add_inspect_parser  # the parser lives apart: it loads nothing heavy
from objmtl.data.schema import SPLITS, Meta, read_meta
from objmtl.data.shard_reader import IMAGE_EXTS, ShardDataset, iter_shard
from objmtl.errors import UserError

__all__ = ["ASPECT_EDGES", "AREA_EDGES", "add_inspect_parser", "inspect_shards", "plot_report",
           "print_report", "run_inspect"]

# bin edges (the last bin also takes what lies beyond it): box areas in px², x4 per bin; width / height
AREA_EDGES = [0.0] + [4.0**k for k in range(1, 14)]
ASPECT_EDGES = [0.0] + [2.0 ** (k / 2) for k in range(-8, 9)] + [256.0]
COCO_SIZES = (("small", 32**2), ("medium", 96**2), ("large", float("inf")))


def _summary(counts: Counter[int]) -> dict[str, float] | None:
    """min, median, max and mean of values given as value -> count (without expanding them)."""
    n = sum(counts.values())
    if not n:
        return None
    values, seen, median = sorted(counts), 0, []
    for v in values:  # the middle one (odd n) or the two middle ones (even n)
        for rank in sorted({(n - 1) // 2, n // 2}):
            if seen <= rank < seen + counts[v]:
                median.append(v)
        seen += counts[v]
    return {"min": values[0], "median": sum(median) / len(median), "max": values[-1],
            "mean": round(sum(v * c for v, c in counts.items()) / n, 3)}


def _bin(edges: list[float], value: float) -> int:
    return min(int(np.searchsorted(edges, value, side="right")) - 1, len(edges) - 2)


class _Stats:
    """Counters of one split (or of all); ``add`` takes one sample's annotation, size and mask."""

    def __init__(self, meta: Meta) -> None:
        self.scanned = self.skipped = self.unlabeled = self.crowd = self.masks = 0
        self.labels = [0] * meta.num_classes
        self.instances = [0] * meta.num_classes
        self.per_image: Counter[int] = Counter()
        self.sizes: Counter[tuple[int, int]] = Counter()
        self.area_hist = [0] * (len(AREA_EDGES) - 1)
        self.aspect_hist = [0] * (len(ASPECT_EDGES) - 1)
        self.coco = dict.fromkeys([name for name, _ in COCO_SIZES], 0)
        self.visibility = [[0, 0, 0] for _ in range(meta.num_keypoints)]
        self.mask_pixels = np.zeros(256, np.int64)

    def add(self, ann: dict[str, Any], size: tuple[int, int], mask: np.ndarray | None) -> None:
        self.scanned += 1
        self.sizes[size] += 1
        label = ann.get("label")
        if label is None:
            self.unlabeled += 1
        elif 0 <= int(label) < len(self.labels):
            self.labels[int(label)] += 1
        boxes = ann.get("boxes", [])
        self.per_image[len(boxes)] += 1
        areas = ann.get("area", [])
        for c in ann.get("classes", []):
            if 0 <= int(c) < len(self.instances):
                self.instances[int(c)] += 1
        self.crowd += sum(1 for v in ann.get("iscrowd", []) if v)
        for i, (x1, y1, x2, y2) in enumerate(boxes):
            w, h = max(0.0, x2 - x1), max(0.0, y2 - y1)
            self.area_hist[_bin(AREA_EDGES, w * h)] += 1
            if w > 0 and h > 0:
                self.aspect_hist[_bin(ASPECT_EDGES, w / h)] += 1
            area = float(areas[i]) if i < len(areas) else w * h  # COCO evaluation's own ``area``
            self.coco[next(name for name, top in COCO_SIZES if area < top)] += 1
        for kps in ann.get("keypoints", []):
            for k, (_, _, v) in enumerate(kps[: len(self.visibility)]):
                self.visibility[k][min(max(int(v), 0), 2)] += 1
        if mask is not None:
            self.masks += 1
            self.mask_pixels += np.bincount(mask.ravel(), minlength=256)[:256]

    def to_dict(self, meta: Meta) -> dict[str, Any]:
        widths, heights = Counter(), Counter()
        for (w, h), n in self.sizes.items():
            widths[w] += n
            heights[h] += n
        total_px = int(self.mask_pixels.sum())
        names = dict(enumerate(meta.mask_classes))
        shares = {names.get(i, "ignore" if i == 255 else str(i)): round(int(n) / total_px, 6)
                  for i, n in enumerate(self.mask_pixels) if n} if total_px else {}
        return {
            "scanned": self.scanned, "skipped": self.skipped, "unlabeled": self.unlabeled,
            "labels": dict(zip(meta.classes, self.labels, strict=True)),
            "instances": dict(zip(meta.classes, self.instances, strict=True)),
            "instances_total": sum(self.instances), "crowd": self.crowd,
            "instances_per_image": {**(_summary(self.per_image) or {}),
                                    "hist": dict(sorted(self.per_image.items()))},
            "box_area": {"edges": AREA_EDGES, "counts": self.area_hist, "coco": dict(self.coco)},
            "box_aspect": {"edges": ASPECT_EDGES, "counts": self.aspect_hist},
            "width": _summary(widths), "height": _summary(heights),
            "sizes": [[w, h, n] for (w, h), n in sorted(self.sizes.items())],
            "keypoint_visibility": {name: dict(zip(("v0", "v1", "v2"), counts, strict=True))
                                    for name, counts in zip(meta.keypoints.names if meta.keypoints else [],
                                                            self.visibility, strict=True)},
            "masks": self.masks, "mask_pixel_shares": shares,
        }


def _read(raw: dict[str, Any]) -> tuple[dict[str, Any], tuple[int, int], np.ndarray | None]:
    ext = next((e for e in IMAGE_EXTS if e in raw), None)
    if ext is None:
        raise ValueError("no image member")
    with Image.open(io.BytesIO(raw[ext])) as im:  # the header only: the size without decoding
        size = im.size
    ann = json.loads(raw["json"]) if "json" in raw else {}
    mask = None
    if "mask.png" in raw:
        with Image.open(io.BytesIO(raw["mask.png"])) as m:
            mask = np.asarray(m if m.mode in ("L", "P") else m.convert("L"))
    return ann, size, mask


def inspect_shards(root: str | Path, *, splits: list[str] | tuple[str, ...] | None = None,
                   limit: int | None = None, progress: bool = False) -> dict[str, Any]:
    """Streams the given splits of a shard set once and returns their statistics.

    Args:
        root: shard set folder with ``meta.json``.
        splits: splits to read; None: every split that has samples.
        limit: read at most this many samples per split (counts still come from meta.json).
        progress: show a tqdm bar.

    Returns:
        ``{"root", "classes", "mask_classes", "keypoints", "counts" (meta.json, per split),
        "shards" (per split), "splits": {split: stats}, "all": stats}``; ``stats`` holds
        ``scanned``, ``labels`` and ``instances`` (class name -> count), ``box_area``,
        ``box_aspect``, ``width`` / ``height`` (min, median, max, mean), ``sizes``,
        ``instances_per_image``, ``keypoint_visibility`` and ``mask_pixel_shares``.

    Raises:
        UserError: no meta.json, or a requested split without samples.
    """
    from tqdm import tqdm

    meta = read_meta(root)
    present = [s for s in SPLITS if meta.count(s) > 0]
    splits = list(splits) if splits else present
    for split in splits:
        if split not in present:
            raise UserError(f"{root}: split {split!r} has no samples "
                            f"(present: {', '.join(present) or 'none'})")
    total = sum(min(meta.count(s), limit) if limit is not None else meta.count(s) for s in splits)
    bar = tqdm(total=total, desc=f"inspect {Path(root).name}", unit="img", disable=not progress)
    per_split, everything = {s: _Stats(meta) for s in splits}, _Stats(meta)
    for split, stats in per_split.items():
        todo = limit if limit is not None else meta.count(split)
        for url, count in ShardDataset(root=root, split=split).shards:
            if todo <= 0:
                break
            for raw in iter_shard(url, 0, min(count, todo)):
                todo -= 1
                bar.update()
                try:
                    sample = _read(raw)
                    stats.add(*sample)
                except (OSError, ValueError, TypeError, KeyError, IndexError, Image.DecompressionBombError):
                    stats.skipped += 1  # undecodable, or not the schema (the counters may be part-updated)
                    everything.skipped += 1
                    continue
                everything.add(*sample)
    bar.close()
    return {
        "root": str(root), "classes": meta.classes, "mask_classes": meta.mask_classes,
        "keypoints": meta.keypoints.names if meta.keypoints else [], "tasks": meta.tasks,
        "counts": {s: meta.count(s) for s in meta.splits},
        "shards": {s: len(v) for s, v in meta.splits.items()},
        "splits": {s: st.to_dict(meta) for s, st in per_split.items()}, "all": everything.to_dict(meta),
    }


def _range(stats: dict[str, float] | None) -> str:
    return " / ".join(f"{stats[k]:g}" for k in ("min", "median", "max")) if stats else "-"


def print_report(report: dict[str, Any]) -> None:
    """Prints an :func:`inspect_shards` report as rich tables."""
    from rich.console import Console
    from rich.table import Table

    def table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
        t = Table(title=title)
        for i, col in enumerate(columns):
            t.add_column(col, justify="left" if i == 0 else "right")
        for row in rows:
            t.add_row(*map(str, row))
        Console().print(t)

    blocks, a = {**report["splits"], "all": report["all"]}, report["all"]
    counts = {**report["counts"], "all": sum(report["counts"].get(s, 0) for s in report["splits"])}
    shards = {**report["shards"], "all": sum(report["shards"].get(s, 0) for s in report["splits"])}
    table(f"{report['root']}: tasks {', '.join(report['tasks']) or '-'}",
          ["split", "samples", "shards", "read", "skipped", "labelled", "instances", "masks"],
          [[n, counts[n], shards[n], b["scanned"], b["skipped"], b["scanned"] - b["unlabeled"],
            b["instances_total"], b["masks"]] for n, b in blocks.items()])
    table("per image: min / median / max", ["split", "instances", "width", "height"],
          [[n, _range(b["instances_per_image"] if "min" in b["instances_per_image"] else None),
            _range(b["width"]), _range(b["height"])] for n, b in blocks.items()])
    table("classes: image labels / instances", ["class", *blocks],
          [[c, *(f"{b['labels'][c]} / {b['instances'][c]}" for b in blocks.values())]
           for c in report["classes"]])
    if a["instances_total"]:
        areas = [(f"{lo:g}-{hi:g}", n) for lo, hi, n in _bins(a["box_area"]) if n]
        aspects = [(f"{lo:.2f}-{hi:.2f}", n) for lo, hi, n in _bins(a["box_aspect"]) if n]
        coco = ", ".join(f"{k} {v}" for k, v in a["box_area"]["coco"].items())
        table(f"boxes (all splits); COCO sizes: {coco}",
              ["area px²", "boxes", "aspect w/h", "boxes "],
              [[*x, *y] for x, y in zip_longest(areas, aspects, fillvalue=("", ""))])
    if a["keypoint_visibility"]:
        table("keypoint visibility (v=0 unlabelled, 1 hidden, 2 visible)", ["keypoint", "v=0", "v=1", "v=2"],
              [[k, *v.values()] for k, v in a["keypoint_visibility"].items()])
    if a["mask_pixel_shares"]:
        table(f"mask pixel shares ({a['masks']} masks)", ["mask class", "share"],
              [[k, f"{100 * v:.2f} %"] for k, v in a["mask_pixel_shares"].items()])


def _bins(hist: dict[str, list]) -> list[tuple[float, float, int]]:
    e = hist["edges"]
    return [(e[i], e[i + 1], n) for i, n in enumerate(hist["counts"])]


def plot_report(report: dict[str, Any], out: str | Path) -> list[Path]:
    """Writes PNG plots of a report into ``out``: class histogram, box areas and aspects, image sizes.

    Args:
        report: an :func:`inspect_shards` result.
        out: folder to write into (created).

    Returns:
        The written files.
    """
    import matplotlib
    from matplotlib import font_manager
    from matplotlib.figure import Figure

    from objmtl.viz.fonts import default_font_path, font_path_for
    from objmtl.viz.plots import save_figure

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    family = ["DejaVu Sans"]
    path = font_path_for(" ".join(report["classes"]))
    if path != default_font_path():  # CJK class names: let matplotlib fall back to the font that has them
        font_manager.fontManager.addfont(str(path))
        family.append(font_manager.FontProperties(fname=str(path)).get_name())
    written = []

    def save(fig: Any, name: str) -> None:
        written.append(save_figure(fig, out / name, dpi=90))

    with matplotlib.rc_context({"font.family": family}):
        a, k = report["all"], len(report["classes"])
        fig = Figure(figsize=(min(4 + 0.35 * k, 24), 4))
        ax = fig.subplots()
        x = np.arange(k)
        for j, (key, name) in enumerate((("labels", "image labels"), ("instances", "instances"))):
            ax.bar(x + (j - 0.5) * 0.4, [a[key][c] for c in report["classes"]], width=0.4, label=name)
        ax.set_xticks(x, report["classes"], rotation=45 if k > 6 else 0, ha="right" if k > 6 else "center")
        ax.set(title="classes (all splits)", ylabel="count")
        ax.legend()
        save(fig, "class_histogram.png")
        for key, title, xlabel in (("box_area", "box areas", "area (px², log scale)"),
                                   ("box_aspect", "box aspect ratios", "width / height (log scale)")):
            bins = [(lo or hi / 4, hi, n) for lo, hi, n in _bins(a[key])]  # the first bin starts at 0
            used = [i for i, (_, _, n) in enumerate(bins) if n] or [0]
            bins = bins[max(used[0] - 1, 0):used[-1] + 2]  # the non-empty range and one empty bin each side
            fig = Figure(figsize=(6, 3.5))
            ax = fig.subplots()
            ax.bar([lo for lo, _, _ in bins], [n for _, _, n in bins], width=[hi - lo for lo, hi, _ in bins],
                   align="edge", edgecolor="black", linewidth=0.5)
            ax.set(xscale="log", title=f"{title} ({a['instances_total']} boxes)", xlabel=xlabel,
                   ylabel="boxes")
            if key == "box_area":
                for edge, name in ((32**2, "small | medium"), (96**2, "medium | large")):
                    if bins[0][0] <= edge <= bins[-1][1]:
                        ax.axvline(edge, color="red", ls="--", lw=1)
                        ax.text(edge, ax.get_ylim()[1] * 0.95, f" {name}", color="red", fontsize=8, va="top")
            save(fig, f"{key}.png")
        fig = Figure(figsize=(5, 5))
        ax = fig.subplots()
        sizes = np.array(a["sizes"], dtype=np.float64).reshape(-1, 3)
        ax.scatter(sizes[:, 0], sizes[:, 1], s=10 + 90 * sizes[:, 2] / max(sizes[:, 2].max(initial=1), 1),
                   alpha=0.6)
        ax.set(title=f"image sizes ({a['scanned']} images)", xlabel="width (px)", ylabel="height (px)")
        ax.grid(alpha=0.3)
        save(fig, "image_sizes.png")
    return written


def run_inspect(args: argparse.Namespace) -> None:
    """``objmtl-data inspect``: prints the tables, optionally writes plots and the report JSON."""
    splits = None if args.split == "all" else [args.split]
    report = inspect_shards(args.root, splits=splits, limit=args.limit, progress=True)
    print_report(report)
    if args.plot is not None:
        for path in plot_report(report, args.plot):
            print(f"wrote {path}")
    if args.json is not None:
        Path(args.json).write_text(json.dumps(report, indent=1, ensure_ascii=False, default=float) + "\n",
                                   encoding="utf-8")
        print(f"wrote {args.json}")

