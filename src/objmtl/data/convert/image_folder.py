"""Classification sources: ImageFolder trees (``[split/]class/image``) and list files (``path label``)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from objmtl.data.convert.engine import NOT_IMAGE_FILE, Conversion, SourceSample
from objmtl.data.convert.splits import split_by_ratio
from objmtl.data.schema import SPLITS, Meta
from objmtl.errors import UserError

__all__ = ["IMAGE_SUFFIXES", "read_image_folder", "read_list_files"]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _carve(items: list[tuple[Path, int, str]], val_fraction: float, test_fraction: float,
           seed: int) -> list[tuple[Path, int, str]]:
    """Moves a stratified share of the train items to missing val / test splits."""
    present = {s for _, _, s in items}
    val = val_fraction if "val" not in present else 0.0
    test = test_fraction if "test" not in present else 0.0
    if not val and not test:
        return items
    train = [(p, y) for p, y, s in items if s == "train"]
    assign = split_by_ratio([p for p, _ in train], val_fraction=val, test_fraction=test, seed=seed,
                            groups=[y for _, y in train])
    return [(p, y, assign[p] if s == "train" else s) for p, y, s in items]


def _conversion(src: Path, items: list[tuple[Path, int, str]], classes: list[str], name: str) -> Conversion:
    samples = [SourceSample(split=s, image=p, ann={"label": y}, where=str(p)) for p, y, s in items]
    meta = Meta(classes=classes, tasks=["cls"], source=f"{name}:{src.name}")
    return Conversion(meta=meta, samples=samples, root=src, total=len(samples))


def read_image_folder(src: str | Path, *, val_fraction: float = 0.2, test_fraction: float = 0.0,
                      seed: int = 0) -> Conversion:
    """``src/{train,val,test}/CLASS/*`` or ``src/CLASS/*``; class ids follow sorted folder names.

    Split folders are kept; a missing val or test split is carved from train by the fractions,
    stratified per class with ``seed``.
    """
    src = Path(src)
    if not src.is_dir():
        raise UserError(f"{src}: no such folder")
    split_dirs = {s: src / s for s in SPLITS if (src / s).is_dir()}
    roots = split_dirs or {"train": src}
    classes = sorted({d.name for root in roots.values() for d in _class_dirs(root)})
    if not classes:
        raise UserError(f"{src}: no class folders (expected {src}/CLASS/IMAGE or {src}/train/CLASS/IMAGE)")
    index = {c: i for i, c in enumerate(classes)}
    items = [(p, index[d.name], split) for split, root in roots.items()
             for d in _class_dirs(root) for p in _images(d)]
    if not items:
        raise UserError(f"{src}: no images with suffixes {', '.join(sorted(IMAGE_SUFFIXES))}")
    found = Counter(y for _, y, _ in items)
    empty = [c for c, i in index.items() if not found[i]]
    if empty:  # as torchvision's ImageFolder: a class without images is a layout mistake, not a class
        raise UserError(f"{src}: class folder(s) without images: {', '.join(empty[:10])} "
                        "(is this an ImageFolder tree, [split/]class/image?)")
    conv = _conversion(src, _carve(items, val_fraction, test_fraction, seed), classes, "imagefolder")
    others = sum(1 for root in roots.values() for d in _class_dirs(root) for p in d.rglob("*")
                 if p.is_file() and p.suffix.lower() not in IMAGE_SUFFIXES)
    if others:
        conv.events[NOT_IMAGE_FILE] = others
    return conv


def read_list_files(src: str | Path, *, lists: dict[str, Path], classes: list[str] | None = None,
                    val_fraction: float = 0.0, test_fraction: float = 0.0, seed: int = 0) -> Conversion:
    """ObjectiveMTL's split lists: lines of ``relative/path label`` (label an int id or a class name).

    Args:
        src: the folder the paths are relative to.
        lists: split -> list file.
        classes: class names by id; default: the sorted names seen, or ``0..max`` for int labels.
    """
    src = Path(src)
    if not src.is_dir():
        raise UserError(f"{src}: no such folder")
    raw: list[tuple[Path, str, str]] = []
    for split, path in lists.items():
        if not Path(path).is_file():
            raise UserError(f"{path}: no such list file")
        for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            parts = line.rsplit(maxsplit=1)
            if len(parts) != 2:
                raise UserError(f"{path}:{n}: expected 'relative/path label', got {line!r}")
            raw.append((src / parts[0], parts[1], split))
    if not raw:
        raise UserError(f"{src}: the list files name no images")
    labels = [lab for _, lab, _ in raw]
    if classes is None:
        if all(lab.lstrip("-").isdigit() for lab in labels):
            classes = [str(i) for i in range(max(int(lab) for lab in labels) + 1)]
        else:
            classes = sorted(set(labels))
    index = {c: i for i, c in enumerate(classes)}
    items = []
    for path, lab, split in raw:
        y = int(lab) if lab.lstrip("-").isdigit() else index.get(lab, -1)
        if not 0 <= y < len(classes):
            known = ", ".join(f"{i}={c}" for i, c in enumerate(classes[:30]))
            raise UserError(f"{path}: label {lab!r} is not a known class (known: {known})")
        items.append((path, y, split))
    missing = [p for p, _, _ in items if not p.is_file()]
    samples_items = [(p, y, s) for p, y, s in items if p.is_file()]
    conv = _conversion(src, _carve(samples_items, val_fraction, test_fraction, seed), classes, "list")
    # a listed path with no image behind it is a label without image: counted, not silently lost
    conv.samples = [*conv.samples, *(SourceSample(split="train", image=None, where=str(p)) for p in missing)]
    conv.total = len(conv.samples)
    return conv
