"""Streaming reader at scale: memory flat in the number of samples, throughput vs a JPEG folder.

    python bench/reader_scale.py --n 100000 --out /tmp/objmtl-bench   # ~3-5 min on 2 cores

1. Writes ``n`` small synthetic samples (32 px, all annotation kinds) as shards.
2. Memory: reads them all in one pass (decode + augment, as training does) and records the
   process's resident memory after 1k, 10k and 100k samples (each checkpoint in a fresh process,
   so the peak belongs to that many samples).
3. Throughput: the same first ``--compare`` images as shards, and as JPEG files in a folder read
   with PIL, both through the same albumentations pipeline and DataLoader settings; alternated
   ``--repeats`` times, medians reported.
Prints a markdown table to paste into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def _transform(size: int):
    import albumentations as A
    from albumentations.pytorch import ToTensorV2

    return A.Compose([A.RandomResizedCrop(size=(size, size), scale=(0.5, 1.0)), A.HorizontalFlip(),
                      A.Normalize(), ToTensorV2()])


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):  # peak resident set size
            return int(line.split()[1]) / 1024
    return float("nan")


def measure_memory(root: str, count: int) -> None:
    """Child process: stream ``count`` training samples, print peak RSS (MB) as JSON."""
    import torch

    from objmtl.data.shard_reader import ShardDataset
    from objmtl.data.task_samples import ClassificationSamples

    torch.set_num_threads(1)
    ds = ShardDataset(root=root, split="train", shuffle=True, shuffle_buffer=1000,
                      transform=ClassificationSamples(transform=_transform(32)))
    n = 0
    for _ in ds:
        n += 1
        if n >= count:
            break
    print(json.dumps({"samples": n, "peak_rss_mb": _rss_mb()}))


class _Folder:
    """A map-style dataset over JPEG files, with the same transform: the usual alternative."""

    def __init__(self, files: list[Path], labels: list[int], transform) -> None:
        self.files, self.labels, self.transform = files, labels, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        import numpy as np
        from PIL import Image

        with Image.open(self.files[i]) as im:
            image = np.asarray(im.convert("RGB"))
        return {"image": self.transform(image=image)["image"], "label": self.labels[i]}


def _export_folder(root: Path, folder: Path, n: int) -> tuple[list[Path], list[int]]:
    from objmtl.data.shard_reader import iter_shard

    files, labels = [], []
    folder.mkdir(parents=True, exist_ok=True)
    meta = json.loads((root / "meta.json").read_text())
    for shard in meta["splits"]["train"]:
        for raw in iter_shard(str(root / "train" / shard["file"])):
            path = folder / f"{raw['__key__']}.jpg"
            path.write_bytes(raw["jpg"])
            files.append(path)
            labels.append(json.loads(raw["json"])["label"])
            if len(files) >= n:
                return files, labels
    return files, labels


def _throughput(loader) -> float:
    start, n = time.perf_counter(), 0
    for batch in loader:
        n += len(batch["label"])
    return n / (time.perf_counter() - start)


def compare(root: Path, work: Path, n: int, repeats: int, workers: int) -> dict[str, float]:
    import torch
    from torch.utils.data import DataLoader

    from objmtl.data.shard_reader import ShardDataset
    from objmtl.data.task_samples import ClassificationSamples

    torch.set_num_threads(1)
    files, labels = _export_folder(root, work / "folder", n)
    # the same n samples as a shard set of their own, so both read exactly the same images
    subset = work / "subset"
    if not (subset / "meta.json").exists():
        from objmtl.data.schema import read_meta
        from objmtl.data.shard_writer import ShardSetWriter

        meta = read_meta(root)
        with ShardSetWriter(subset, meta=meta, max_count=1000, overwrite=True) as w:
            for f, y in zip(files, labels, strict=True):
                w.write("train", image=f.read_bytes(), ext="jpg", ann={"label": y})
    results: dict[str, list[float]] = {"shards": [], "folder": []}
    for _ in range(repeats):
        shards = ShardDataset(root=subset, split="train", shuffle=True, shuffle_buffer=1000, batch_size=64,
                              transform=ClassificationSamples(transform=_transform(32)))
        results["shards"].append(_throughput(DataLoader(shards, batch_size=64, num_workers=workers)))
        folder = _Folder(files, labels, _transform(32))
        results["folder"].append(_throughput(DataLoader(folder, batch_size=64, shuffle=True, num_workers=workers)))
    return {k: statistics.median(v) for k, v in results.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--compare", type=int, default=5000, help="images in the throughput comparison")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--memory-child", nargs=2, metavar=("ROOT", "COUNT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.memory_child:
        measure_memory(args.memory_child[0], int(args.memory_child[1]))
        return

    from objmtl.data.synth import write_synthetic

    root = args.out / f"synth-{args.n}"
    if not (root / "meta.json").exists():
        t = time.perf_counter()
        write_synthetic(root, n=args.n, seed=0, image_size=32, val_fraction=0.0, test_fraction=0.0,
                        max_count=1000, overwrite=True, progress=True)
        print(f"wrote {args.n} samples in {time.perf_counter() - t:.0f} s")
    counts = [c for c in (1000, 10_000, 100_000) if c <= args.n]
    memory = []
    for count in counts:
        out = subprocess.run([sys.executable, __file__, "--out", str(args.out), "--memory-child", str(root),
                              str(count)], capture_output=True, text=True, check=True)
        memory.append(json.loads(out.stdout.strip().splitlines()[-1]))
    speed = compare(root, args.out, args.compare, args.repeats, args.workers)

    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print("\n| samples read | peak RSS (MB) |\n|---:|---:|")
    for m in memory:
        print(f"| {m['samples']:,} | {m['peak_rss_mb']:.0f} |")
    base = memory[0]["peak_rss_mb"]
    print(f"\npeak RSS at {memory[-1]['samples']:,} vs {memory[0]['samples']:,} samples: "
          f"{memory[-1]['peak_rss_mb'] / base:.3f}x")
    print(f"\n| reader ({args.compare} JPEGs, 32 px, {args.workers} workers, median of {args.repeats}) "
          "| samples/s |\n|---|---:|")
    print(f"| shards (ShardDataset) | {speed['shards']:.0f} |\n| JPEG folder (PIL) | {speed['folder']:.0f} |")
    print(f"\nshards / folder: {speed['shards'] / speed['folder']:.2f}x")


if __name__ == "__main__":
    main()
