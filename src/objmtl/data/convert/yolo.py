"""YOLO txt labels (Ultralytics / darknet): boxes, segment polygons or pose keypoints.

Layout, the first rule that applies (folders relative to ``--src``):

1. ``--split-file SPLIT=FILE``: images under ``--images`` (default ``images``) go to the split whose
   file names them (a path relative to ``--src`` or to the file, or a stem); unlisted images go to
   train when no train file is given, else they are an error.
2. ``--images DIR [--labels DIR]``: one folder pair split by ``--val-fraction`` / ``--test-fraction``
   / ``--seed``; the default label folder is DIR with its ``images`` part renamed ``labels`` (or DIR).
3. ``images/{train,val,test}`` + ``labels/<split>``, or Roboflow's ``{train,valid,test}/{images,labels}``:
   the folders are the splits; a missing val / test split is carved from train by the fractions.
4. ``images`` + ``labels``, split by the fractions.

An image's label file has its path relative to the label folder with ``.txt``. An image without one
is background (counted); a label file without image is counted and ignored; an empty one means no
objects. Lines are ``cls`` then N normalised numbers, read deterministically:

- pose mode (``--task pose``, or no ``--task`` and a ``kpt_shape`` in the ``--names`` yaml): each line
  is ``cls cx cy w h`` + K x (px py v), or K x (px py) with v = 2 (0 if px or py < 0, as Ultralytics).
  (K, D) come from ``kpt_shape``, else from the first label line in image order (D = 3 when N - 4
  divides by 3, else 2);
- otherwise N = 4 is a box and an even N >= 6 a polygon (an odd field count >= 7), written with its
  extent as box; ``--task det`` keeps only the box.

Any other length is a UserError naming file:line. A NaN or infinite number gives the instance a NaN
box, which the engine drops and counts. Keypoints with v = 0 are [0, 0, 0]; v must be 0, 1 or 2.

``--names``: a YOLO data yaml (``names:`` list or ``{id: name}`` mapping, gaps allowed, e.g. COCO
panoptic thing ids; ``kpt_shape`` and ``flip_idx`` are read, ``train:``/``val:`` are not), a json, or
one name per line. Training ids are the source ids in sorted order (``Meta.classes`` = their names;
gapped ids are listed in ``Meta.source``); an id not named is an error. Without ``--names``: classes
``"0"`` .. the largest id seen. K = 17 gets the COCO names, skeleton, sigmas and flip pairs.

Pixels: normalised values are scaled by the size read from the image header
(``PIL.Image.open(path).size``, no decoding). When that fails, or the image leaves ``--src``, the
instances get NaN boxes and the engine drops the image with them, counting the reason.
"""

from __future__ import annotations

import argparse
import json
import math
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml
from PIL import Image

from objmtl.data.convert.engine import NO_LABEL, Conversion, SourceSample
from objmtl.data.convert.image_folder import IMAGE_SUFFIXES
from objmtl.data.convert.options import class_names, locate, split_files
from objmtl.data.convert.splits import read_split_file, split_by_ratio
from objmtl.data.schema import KeypointSpec, Meta
from objmtl.errors import UserError

__all__ = ["COCO_KEYPOINTS", "COCO_SIGMAS", "COCO_SKELETON", "DROPPED_BACKGROUND", "from_args", "read_yolo"]

COCO_KEYPOINTS = ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
                  "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
                  "left_knee", "right_knee", "left_ankle", "right_ankle"]
COCO_SKELETON = [[a - 1, b - 1] for a, b in (  # COCO's person skeleton is 1-based
    (16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7), (6, 8), (7, 9), (8, 10),
    (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7))]
COCO_SIGMAS = [.026, .025, .025, .035, .035, .079, .079, .072, .072, .062, .062, .107, .107, .087, .087,
               .089, .089]
DROPPED_BACKGROUND = "image without label file (dropped: --drop-background)"

_Inst = tuple[int, list[float], list[float] | None, list[list[float]] | None]  # class, xyxy, ring, keypoints


def _names_file(path: Path) -> tuple[list[int], list[str], dict[str, Any]]:
    """Source ids, names in sorted-id order, and the yaml's other keys (kpt_shape, flip_idx)."""
    if path.suffix not in (".yaml", ".yml", ".json") or not path.is_file():
        names = class_names(path)
        return list(range(len(names))), names, {}
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as e:
        raise UserError(f"{path}: can't parse ({str(e).splitlines()[0]})") from None
    extra = data if isinstance(data, dict) else {}
    names = extra.get("names", extra.get("classes")) if isinstance(data, dict) else data
    if isinstance(names, list):
        return list(range(len(names))), [str(n) for n in names], extra
    if not isinstance(names, dict):
        raise UserError(f"{path}: no 'names' list or id -> name mapping inside")
    try:
        by_id = {int(k): str(v) for k, v in names.items()}
    except (TypeError, ValueError):
        raise UserError(f"{path}: class ids must be integers (got {list(names)[:10]})") from None
    if len(by_id) != len(names) or min(by_id, default=0) < 0:
        raise UserError(f"{path}: class ids must be distinct integers >= 0")
    return sorted(by_id), [by_id[i] for i in sorted(by_id)], extra


def _keypoint_spec(k: int, flip_idx: Any, where: str) -> KeypointSpec:
    pairs = [[i, i + 1] for i in range(1, 17, 2)] if k == 17 else []
    if flip_idx is not None:
        if not (isinstance(flip_idx, list) and len(flip_idx) == k and all(
                isinstance(f, int) and 0 <= f < k and flip_idx[f] == i for i, f in enumerate(flip_idx))):
            raise UserError(f"{where}: flip_idx must map each of the {k} keypoints to its mirror "
                            f"(got {flip_idx})")
        pairs = [[i, f] for i, f in enumerate(flip_idx) if i < f]
    if k == 17:
        return KeypointSpec(names=list(COCO_KEYPOINTS), skeleton=COCO_SKELETON, flip_pairs=pairs,
                            sigmas=list(COCO_SIGMAS))
    return KeypointSpec(names=[f"kp{i}" for i in range(k)], flip_pairs=pairs, sigmas=[0.05] * k)


def _class_id(field: str, where: str, index: dict[int, int] | None, names: list[str]) -> int:
    try:
        value = float(field)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value == int(value) and value >= 0):
        raise UserError(f"{where}: class id {field!r} is not an integer >= 0")
    if index is None:
        return int(value)
    if int(value) not in index:
        known = ", ".join(f"{i}={names[j]}" for i, j in list(index.items())[:30])
        raise UserError(f"{where}: class id {int(value)} is not in --names ({len(index)} ids; known: {known}"
                        f"{', ...' if len(index) > 30 else ''})")
    return index[int(value)]


def _instance(cls: int, v: list[float], where: str, mode: str, kpt: tuple[int, int] | None) -> _Inst:
    n, finite, nan_box = len(v), all(math.isfinite(x) for x in v), [math.nan] * 4
    cx, cy, bw, bh = v[:4] if finite and n >= 4 else nan_box
    box = [cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2]
    if mode == "pose":
        k, d = kpt or (0, 3)
        if n != 4 + k * d:
            raise UserError(f"{where}: {n + 1} fields; pose lines need {5 + k * d} "
                            f"(cls cx cy w h + {k} x {'px py v' if d == 3 else 'px py'})")
        pts = [v[4 + j * d: 4 + (j + 1) * d] for j in range(k)] if finite else []
        pts = pts if d == 3 else [[x, y, 0.0 if min(x, y) < 0 else 2.0] for x, y in pts]
        for j, p in enumerate(pts):
            if p[2] not in (0.0, 1.0, 2.0):
                raise UserError(f"{where}: keypoint {j} visibility {p[2]:g} is not 0, 1 or 2")
        return cls, box, None, pts or [[0.0, 0.0, 0]] * k
    if n == 4:
        return cls, box, None, None
    if n >= 6 and n % 2 == 0:
        box = [min(v[0::2]), min(v[1::2]), max(v[0::2]), max(v[1::2])] if finite else nan_box
        return cls, box, (None if mode == "det" else v), None
    hint = "; a pose line? pass --task pose or a data yaml with kpt_shape" if n > 4 and n % 2 else ""
    raise UserError(f"{where}: {n + 1} fields; expected 5 (cls cx cy w h) or an odd count >= 7 "
                    f"(cls x1 y1 x2 y2 x3 y3 ...){hint}")


def _lines(path: Path) -> Iterator[tuple[str, list[str]]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: can't read ({e})") from None
    yield from ((f"{path}:{n}", line.split()) for n, line in enumerate(lines, 1) if line.split())


def _parse(path: Path, *, mode: str, kpt: tuple[int, int] | None, index: dict[int, int] | None,
           names: list[str]) -> list[_Inst]:
    out = []
    for where, fields in _lines(path):
        cls = _class_id(fields[0], where, index, names)
        try:
            values = [float(x) for x in fields[1:]]
        except ValueError:
            raise UserError(f"{where}: not a number in {' '.join(fields)[:80]!r}") from None
        out.append(_instance(cls, values, where, mode, kpt))
    return out


def _pose_shape(extra: dict[str, Any], where: str, files: list[Path]) -> tuple[int, int] | None:
    """(K, D) from the yaml's kpt_shape, else from the first label line with more than 5 fields."""
    shape = extra.get("kpt_shape")
    if shape is not None:
        if not (isinstance(shape, list) and len(shape) == 2 and all(isinstance(v, int) for v in shape)
                and shape[0] >= 1 and shape[1] in (2, 3)):
            raise UserError(f"{where}: kpt_shape must be [K, 2] or [K, 3] (got {shape!r})")
        return shape[0], shape[1]
    for line, fields in (x for path in files for x in _lines(path)):
        rest = len(fields) - 5
        if rest > 0:
            if rest % 2 and rest % 3:
                raise UserError(f"{line}: {rest + 5} fields is not 5 + K x 3 or 5 + K x 2 (a pose line)")
            return (rest // 3, 3) if rest % 3 == 0 else (rest // 2, 2)
    return None


def _folder(src: Path, rel: str, flag: str) -> Path:
    path = src / rel
    if not path.resolve().is_relative_to(src.resolve()):
        raise UserError(f"{flag} {rel}: leaves --src {src}")
    if not path.is_dir():
        raise UserError(f"{flag} {rel}: no such folder under {src}")
    return path


def _folders(src: Path, images: str | None, labels: str | None, lists: bool) -> dict[str, tuple[Path, Path]]:
    """split -> (image folder, label folder), by the layout rules of the module docstring."""
    found: dict[str, tuple[Path, Path]] = {}
    if not images and not lists:
        for split, name in (("train", "train"), ("val", "val"), ("val", "valid"), ("test", "test")):
            if split not in found and (src / "images" / split).is_dir():
                found[split] = (src / "images" / split, src / "labels" / split)
            elif split not in found and (src / name / "images").is_dir():
                found[split] = (src / name / "images", src / name / "labels")
        if found and labels:
            raise UserError("--labels needs --images (the folder its label files belong to)")
        if found and not any(lab.is_dir() for _, lab in found.values()):
            raise UserError(f"{src}: split image folders but no label folder beside them (labels/<split>)")
        if found:
            return found
        if not (src / "images").is_dir():
            raise UserError(f"{src}: no images/, images/{{train,val,test}}/ or {{train,valid,test}}/images/ "
                            "folder: pass --images DIR (and --labels DIR)")
    img_dir = _folder(src, images or "images", "--images")
    rel = img_dir.relative_to(src)
    guess = Path(*["labels" if p == "images" else p for p in rel.parts]) if "images" in rel.parts else rel
    return {"train": (img_dir, _folder(src, labels or str(guess), "--labels"))}


def _assign_lists(images: list[Path], lists: dict[str, Path],
                  src: Path) -> tuple[dict[Path, str], list[SourceSample]]:
    by_path = {p.resolve(): p for p in images}
    by_stem: dict[str, list[Path]] = {}
    for p in images:
        by_stem.setdefault(p.stem, []).append(p)
    out: dict[Path, str] = {}
    missing = []
    for split, file in lists.items():
        for entry in read_split_file(file):
            e = Path(entry)
            hits = [by_path[c.resolve()] for c in ([e] if e.is_absolute() else [src / e, file.parent / e])
                    if c.resolve() in by_path]
            hits = list(dict.fromkeys(hits)) or by_stem.get(e.stem if e.suffix.lower() in IMAGE_SUFFIXES
                                                           else e.name, [])
            if len(hits) > 1:
                raise UserError(f"{file}: {entry!r} matches {len(hits)} images ({hits[0]}, {hits[1]}); "
                                "use paths")
            if not hits:
                missing.append(SourceSample(split=split, image=None, where=f"{file}: {entry}"))
            elif out.setdefault(hits[0], split) != split:
                raise UserError(f"{file}: {entry!r} is already in split {out[hits[0]]}")
    rest = [p for p in images if p not in out]
    if rest and "train" in lists:
        raise UserError(f"{len(rest)} images are in no --split-file (e.g. {rest[0]}): list them, or give no "
                        "train file (the unlisted images then go to train)")
    return {**out, **dict.fromkeys(rest, "train")}, missing


def _layout(src: Path, images: str | None, labels: str | None, lists: dict[str, Path], val: float,
            test: float, seed: int) -> tuple[list[tuple[Path, Path, str]], list[SourceSample]]:
    """(image, label path, split) for every image, and label files / list entries without image."""
    folders = _folders(src, images, labels, bool(lists))
    rows, orphans = [], []
    for split, (img_dir, lab_dir) in folders.items():
        pairs = [(p, lab_dir / p.relative_to(img_dir).with_suffix(".txt"), split) for p in sorted(
            p for p in img_dir.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)]
        used = {lab for _, lab, _ in pairs}
        orphans += [SourceSample(split=split, image=None, where=str(t))
                    for t in sorted(lab_dir.rglob("*.txt") if lab_dir.is_dir() else []) if t not in used]
        rows += pairs
    if lists:
        assign, missing = _assign_lists([p for p, _, _ in rows], lists, src)
        return [(p, lab, assign[p]) for p, lab, _ in rows], orphans + missing
    val, test = (val if "val" not in folders else 0.0), (test if "test" not in folders else 0.0)
    if val or test:
        assign = split_by_ratio([p for p, _, s in rows if s == "train"], val_fraction=val, test_fraction=test,
                                seed=seed)
        rows = [(p, lab, assign[p] if s == "train" else s) for p, lab, s in rows]
    return rows, orphans


def _size(path: Path, root: Path) -> tuple[int, int] | None:
    try:
        if not path.resolve().is_relative_to(root.resolve()):
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                return im.size
    except Exception:  # any failure: the engine decodes the image itself and counts why it can't
        return None


def _ann(insts: list[_Inst], size: tuple[int, int] | None, keys: set[str]) -> dict[str, Any]:
    w, h = size or (math.nan, math.nan)
    ann: dict[str, Any] = {"boxes": [], "classes": [], **{k: [] for k in keys}}
    for cls, box, ring, kpts in insts:
        ann["classes"].append(cls)
        ann["boxes"].append([round(v * s, 3) for v, s in zip(box, (w, h, w, h), strict=True)])
        if "polygons" in keys:
            ann["polygons"].append([[round(v * (h if i % 2 else w), 3) for i, v in enumerate(ring)]]
                                   if ring and size else [])
        if "keypoints" in keys:
            ann["keypoints"].append([[round(x * w, 3), round(y * h, 3), int(v)] if v and size
                                     else [0.0, 0.0, 0] for x, y, v in kpts or []])
    return ann


def read_yolo(src: str | Path, *, images: str | None = None, labels: str | None = None,
              split_lists: dict[str, Path] | None = None, names: str | Path | None = None,
              task: str | None = None, val_fraction: float = 0.2, test_fraction: float = 0.0, seed: int = 0,
              drop_background: bool = False) -> Conversion:
    """Reads a YOLO label tree; the module docstring has the layout and line rules.

    Args:
        src: the data set root; ``images`` / ``labels`` are folders relative to it.
        split_lists: split -> file of image paths or stems.
        names: a YOLO data yaml, json, or one-name-per-line file.
        task: ``det``, ``seg`` or ``pose``; None decides per line.
        drop_background: leave out images without a label file (counted in ``Conversion.events``).
    """
    src = Path(src)
    if not src.is_dir():
        raise UserError(f"{src}: no such folder")
    ids, class_list, extra = _names_file(Path(names)) if names else (None, [], {})
    index = {i: j for j, i in enumerate(ids)} if ids is not None else None
    rows, orphans = _layout(src, images, labels, split_lists or {}, val_fraction, test_fraction, seed)
    label_files = [lab for _, lab, _ in rows if lab.is_file()]
    mode = "pose" if task == "pose" or (task is None and "kpt_shape" in extra) else task or "auto"
    kpt = _pose_shape(extra, str(names), label_files) if mode == "pose" else None
    max_id, polys = -1, False
    for path in label_files:  # first pass: every error before anything is written, and the meta
        for cls, _, ring, _ in _parse(path, mode=mode, kpt=kpt, index=index, names=class_list):
            max_id, polys = max(max_id, cls), polys or ring is not None
    if index is None:
        if max_id < 0:
            raise UserError(f"{src}: no label lines and no --names: can't tell the classes")
        class_list = [str(i) for i in range(max_id + 1)]
    keys = {"polygons"} if polys else set()
    spec = _keypoint_spec(kpt[0], extra.get("flip_idx"), str(names)) if kpt else None
    keys |= {"keypoints"} if spec else set()
    gapped = ids is not None and ids != list(range(len(ids)))
    meta = Meta(classes=class_list, tasks=["det", *(["seg", "inst"] if polys else []), *(["pose"] if spec else [])],
                # polygons become masks when read for task=seg: 0 = background, class i -> i + 1
                mask_classes=["background", *class_list] if polys else [],
                keypoints=spec, source=f"yolo:{src.name}" + ("; source class ids " + ",".join(map(str, ids))
                                                            if gapped else ""),
                class_ids=list(ids) if gapped else [])
    conv = Conversion(meta=meta, samples=[], root=src)
    if drop_background and any(not lab.is_file() for _, lab, _ in rows):
        conv.events[DROPPED_BACKGROUND] += sum(not lab.is_file() for _, lab, _ in rows)
        rows = [r for r in rows if r[1].is_file()]

    def samples() -> Iterator[SourceSample]:
        for image, lab, split in rows:
            if not lab.is_file():
                yield SourceSample(split=split, image=image, ann=_ann([], None, keys), where=str(image),
                                   events=[NO_LABEL])
                continue
            insts = _parse(lab, mode=mode, kpt=kpt, index=index, names=class_list)
            size = _size(image, src) if insts else None
            yield SourceSample(split=split, image=image, ann=_ann(insts, size, keys), where=str(lab))
        yield from orphans

    conv.samples, conv.total = samples(), len(rows) + len(orphans)
    return conv


def from_args(fmt: str) -> Callable[[argparse.Namespace], Conversion]:
    """The CLI entry of ``objmtl-data convert --format yolo``."""

    def yolo(args: argparse.Namespace) -> Conversion:
        lists = split_files(args.split_file or args.ann, "--split-file" if args.split_file else "--ann", src=args.src)
        return read_yolo(args.src, images=args.images, labels=args.labels, split_lists=lists,
                         names=locate(args.names, args.src) if args.names else None, task=args.task,
                         val_fraction=args.val_fraction,
                         test_fraction=args.test_fraction, seed=args.seed,
                         drop_background=args.drop_background)

    return yolo
