#!/usr/bin/env python3
"""scikit-learn's digits (1797 real 8x8 scans, in objmtl's dev extra) as an image regression source:
OUT/images/NNNN.png and OUT/labels.csv (``path,digit``), for ``objmtl-data convert --format csv``.

    python scripts/digits_csv.py --out digits
    objmtl-data convert --format csv --src digits --ann train=labels.csv --targets digit --out digits-shards
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from PIL import Image


def write_digits(out: Path, *, limit: int | None = None) -> int:
    """Writes the scans (grey 0..16 scaled to 0..255) and their CSV; returns how many."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images, values = digits.images[:limit], digits.target[:limit]
    (out / "images").mkdir(parents=True, exist_ok=True)
    with (out / "labels.csv").open("w", newline="", encoding="utf-8") as f:
        table = csv.writer(f)
        table.writerow(["path", "digit"])
        for i, (image, value) in enumerate(zip(images, values, strict=True)):
            rel = f"images/{i:04d}.png"
            Image.fromarray(np.round(image * 255 / 16).astype(np.uint8)).save(out / rel)
            table.writerow([rel, int(value)])
    return len(values)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--limit", type=int, default=None, help="only the first N scans")
    args = p.parse_args()
    n = write_digits(args.out, limit=args.limit)
    print(f"wrote {n} images and {args.out / 'labels.csv'}\nnext: objmtl-data convert --format csv --src {args.out} "
          f"--ann train=labels.csv --targets digit --out {args.out}-shards")


if __name__ == "__main__":
    main()
