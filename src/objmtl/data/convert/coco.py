"""COCO json: ``instances_*`` (boxes, polygons, RLE) and ``person_keypoints_*``.

``objmtl-data convert --format coco --src ROOT --out OUT --ann train=annotations/instances_train2017.json
[--ann val=...] [--images train2017] [--rle-masks]``

- Category ids (COCO: 1..90 with gaps) become contiguous training ids in sorted-id order.
- ``bbox`` (x, y, w, h) becomes an xyxy box; ``area`` and ``iscrowd`` are kept as COCO has them
  (OKS and the small/medium/large APs use COCO's area). Polygon segmentations become ``polygons``;
  an RLE segmentation (crowd regions, RLE objects) gets no polygon ring and is kept as that instance's ``rle``
  (compressed; schema version 2), so ``task=inst`` trains on and scores every COCO outline.
- A keypoint category gives the :class:`KeypointSpec`: its names, its skeleton (made 0-based),
  left/right flip pairs from the names, and COCO's sigmas for COCO's 17 names (else 0.05 each).
  An annotation without keypoints keeps K all-zero (unlabelled) keypoints.
- ``--rle-masks`` also renders every instance segmentation into a semantic mask:
  ``mask_classes = ["background", *classes]`` (0 = background, class i -> i + 1); crowd regions
  are drawn first as 255 (ignore), then the other instances by decreasing area, so smaller objects
  stay on top of larger ones and a labelled instance inside a crowd region keeps its class.
- Images: ``ROOT/<--images>/<file_name>``; by default the first of ROOT, ROOT/<split> and
  ROOT/<json name after its last '_'> (``instances_train2017`` -> ``train2017``) that holds them.
  Images the json lists without annotations are kept (no objects; normal in COCO).
- Splits: one json per split; a missing val / test split is carved from train by the fractions.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from objmtl.data.convert.engine import Conversion, SourceSample
from objmtl.data.convert.options import split_files
from objmtl.data.convert.splits import split_by_ratio
from objmtl.data.schema import IGNORE_INDEX, KeypointSpec, Meta
from objmtl.errors import UserError

__all__ = ["COCO_KEYPOINT_NAMES", "COCO_SIGMAS", "from_args", "keypoint_spec", "read_coco", "render_mask"]

COCO_KEYPOINT_NAMES = ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
                       "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip",
                       "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle"]
COCO_SIGMAS = [0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107,
               0.087, 0.087, 0.089, 0.089]
DEFAULT_SIGMA = 0.05
_MISSING = object()


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _get(obj: Any, key: str, where: str, kind: str, *, default: Any = _MISSING) -> Any:
    """``obj[key]`` checked against ``kind`` (int, num, str, list, dict, seg); errors name ``where.key``."""
    if not isinstance(obj, dict):
        raise UserError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    if key not in obj:
        if default is not _MISSING:
            return default
        raise UserError(f"{where}.{key}: missing")
    v = obj[key]
    ok = {"int": lambda: isinstance(v, int) and not isinstance(v, bool), "num": lambda: _is_num(v),
          "str": lambda: isinstance(v, str), "list": lambda: isinstance(v, list),
          "seg": lambda: isinstance(v, list | dict)}[kind]()
    if not ok:
        raise UserError(f"{where}.{key}: expected {kind}, got {type(v).__name__} {str(v)[:40]}")
    return v


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a COCO json object with images, annotations, categories")
    for key in ("images", "categories"):
        _get(data, key, str(path), "list")
    _get(data, "annotations", str(path), "list", default=[])
    return data


def keypoint_spec(names: list[str], skeleton: list[list[int]] | None = None) -> KeypointSpec:
    """The spec of a COCO keypoint category: 1-based skeleton made 0-based, flip pairs from names.

    Args:
        names: the category's ``keypoints`` names.
        skeleton: the category's 1-based ``skeleton`` pairs.
    """
    index = {n.lower(): i for i, n in enumerate(names)}
    flips = []
    for i, n in enumerate(names):
        j = index.get(n.lower().replace("left", "right"), -1) if "left" in n.lower() else -1
        if j >= 0:
            flips.append(sorted([i, j]))
    sigmas = COCO_SIGMAS if list(names) == COCO_KEYPOINT_NAMES else [DEFAULT_SIGMA] * len(names)
    return KeypointSpec(names=list(names), skeleton=[[int(a) - 1, int(b) - 1] for a, b in skeleton or []],
                        flip_pairs=sorted(flips), sigmas=list(sigmas))


def _categories(files: dict[str, tuple[Path, dict[str, Any]]]) -> tuple[dict[int, str], KeypointSpec | None]:
    names: dict[int, str] = {}
    spec = None
    for path, data in files.values():
        for i, cat in enumerate(data["categories"]):
            where = f"{path}: categories[{i}]"
            cid, name = _get(cat, "id", where, "int"), _get(cat, "name", where, "str")
            if names.setdefault(cid, name) != name:
                raise UserError(f"{where}: id {cid} is {name!r} here but {names[cid]!r} elsewhere")
            kps = _get(cat, "keypoints", where, "list", default=[])
            if kps and spec is None:
                if not all(isinstance(k, str) for k in kps):
                    raise UserError(f"{where}.keypoints: expected a list of names")
                skeleton = _get(cat, "skeleton", where, "list", default=[])
                if not all(isinstance(p, list) and len(p) == 2 and all(map(_is_num, p)) for p in skeleton):
                    raise UserError(f"{where}.skeleton: expected pairs of 1-based keypoint indices")
                spec = keypoint_spec(kps, skeleton)
    if not names:
        raise UserError(f"{', '.join(str(p) for p, _ in files.values())}: no categories")
    return names, spec


def _segmentation(seg: Any, where: str) -> tuple[list[list[float]], dict[str, Any] | None]:
    """Polygon rings, or the RLE dict of a crowd region."""
    if isinstance(seg, dict):
        counts, size = seg.get("counts"), seg.get("size")
        if not isinstance(counts, list | str) or not (isinstance(size, list) and len(size) == 2):
            raise UserError(f"{where}: an RLE needs 'counts' (list or string) and 'size' [h, w]")
        return [], seg
    rings = []
    for j, ring in enumerate(seg):
        if not isinstance(ring, list) or not all(map(_is_num, ring)):
            raise UserError(f"{where}[{j}]: expected a flat list of numbers x0, y0, x1, y1, ...")
        rings.append([float(v) for v in ring])
    return rings, None


def _annotation(a: Any, where: str, class_of: dict[int, int], k: int) -> dict[str, Any]:
    cid = _get(a, "category_id", where, "int")
    if cid not in class_of:
        known = ", ".join(str(c) for c in sorted(class_of)[:30])
        raise UserError(f"{where}.category_id: {cid} is not a category of this json (known: {known})")
    bbox = _get(a, "bbox", where, "list")
    if len(bbox) != 4 or not all(map(_is_num, bbox)):
        raise UserError(f"{where}.bbox: expected 4 numbers x, y, w, h, got {str(bbox)[:60]}")
    x, y, w, h = (float(v) for v in bbox)
    inst: dict[str, Any] = {"box": [x, y, x + w, y + h], "cls": class_of[cid],
                            "iscrowd": int(_get(a, "iscrowd", where, "int", default=0)),
                            "area": float(_get(a, "area", where, "num", default=w * h))}
    rings, rle = _segmentation(_get(a, "segmentation", where, "seg", default=[]), f"{where}.segmentation")
    inst.update(rings=rings, rle=rle)
    if k:
        flat = _get(a, "keypoints", where, "list", default=[0] * (3 * k))
        if len(flat) != 3 * k or not all(map(_is_num, flat)):
            raise UserError(f"{where}.keypoints: expected {3 * k} numbers ({k} x, y, v), got {len(flat)}")
        inst["keypoints"] = [[float(flat[3 * j]), float(flat[3 * j + 1]), int(flat[3 * j + 2])]
                             for j in range(k)]
    return inst


def render_mask(instances: list[dict[str, Any]], *, height: int, width: int) -> np.ndarray:
    """A uint8 HxW semantic mask: 0 background, class i -> i + 1, crowd regions 255 (drawn first).

    Args:
        instances: dicts with ``cls``, ``iscrowd``, ``area``, ``rings`` (polygons) and ``rle`` (or None).
        height: the image height.
        width: the image width.
    """
    from faster_coco_eval.core import mask as cmask

    out = np.zeros((height, width), dtype=np.uint8)
    order = sorted(instances, key=lambda inst: (not inst["iscrowd"], -inst["area"]))
    for inst in order:
        if inst["rle"] is not None:
            rle = inst["rle"]
            rle = cmask.frPyObjects(rle, *rle["size"]) if isinstance(rle["counts"], list) else rle
        else:
            rings = [r for r in inst["rings"] if len(r) >= 6 and len(r) % 2 == 0 and all(map(math.isfinite, r))]
            if not rings:
                continue
            rle = cmask.merge(cmask.frPyObjects(rings, height, width))
        bits = cmask.decode(rle).astype(bool)
        if bits.shape != out.shape:  # an RLE of another size: leave it out rather than misplace it
            continue
        out[bits] = IGNORE_INDEX if inst["iscrowd"] else inst["cls"] + 1
    return out


def _image_base(src: Path, images: str | None, split: str, path: Path, names: list[str]) -> Path:
    if not names:
        raise UserError(f"{path}: its 'images' list is empty")
    if images is not None:
        base = src / images
        if not base.is_dir():
            raise UserError(f"--images {images}: no such folder under {src}")
        return base
    candidates = [src, src / split, src / path.stem.rsplit("_", 1)[-1]]
    for base in candidates:
        if any((base / n).is_file() for n in names[:50]):
            return base
    raise UserError(f"{path}: its images are not under {', '.join(map(str, candidates))}; "
                    "pass --images FOLDER (relative to --src)")


def _compressed(rle: dict[str, Any]) -> dict[str, Any]:
    """A COCO RLE with ``counts`` as the compressed string (an uncompressed ``counts`` list is encoded)."""
    from faster_coco_eval.core import mask as cmask

    h, w = (int(v) for v in rle["size"])
    out = cmask.frPyObjects(rle, h, w) if isinstance(rle["counts"], list) else dict(rle)
    counts = out["counts"]
    return {"size": [h, w], "counts": counts.decode("ascii") if isinstance(counts, bytes) else str(counts)}


def _ann_dict(insts: list[dict[str, Any]], image_id: int, seg: bool, pose: bool) -> dict[str, Any]:
    ann: dict[str, Any] = {"image_id": image_id, "boxes": [i["box"] for i in insts],
                           "classes": [i["cls"] for i in insts], "iscrowd": [i["iscrowd"] for i in insts],
                           "area": [i["area"] for i in insts]}
    if seg:
        ann["polygons"] = [i["rings"] for i in insts]
        if any(i["rle"] is not None for i in insts):  # schema 2: crowd regions and RLE objects as they are
            ann["rle"] = [_compressed(i["rle"]) if i["rle"] is not None else None for i in insts]
    if pose:
        ann["keypoints"] = [i["keypoints"] for i in insts]
    return ann


def read_coco(src: str | Path, *, anns: dict[str, Path], images: str | None = None, rle_masks: bool = False,
              val_fraction: float = 0.2, test_fraction: float = 0.0, seed: int = 0) -> Conversion:
    """Reads COCO json files (one per split) into a :class:`Conversion`.

    Args:
        src: the data set root; image paths may not leave it.
        anns: split -> COCO json file.
        images: the image folder relative to ``src`` (default: found, see the module doc).
        rle_masks: also render instance segmentations into semantic masks (``SourceSample.mask``
            becomes a uint8 array of training ids; ``mask_classes = ["background", *classes]``).
        val_fraction: share of train carved for val when no val json is given.
        test_fraction: share of train carved for test when no test json is given.
        seed: the seed of that carving.
    """
    src = Path(src)
    if not src.is_dir():
        raise UserError(f"{src}: no such folder")
    if not anns:
        raise UserError("--format coco needs --ann SPLIT=FILE (e.g. --ann train=annotations/instances_train2017.json)")
    files = {split: (Path(p), _load(Path(p))) for split, p in anns.items()}
    names, spec = _categories(files)
    class_of = {cid: i for i, cid in enumerate(sorted(names))}
    k = len(spec.names) if spec else 0
    items: list[tuple[str, Path | None, dict[str, Any], str, tuple[int, int] | None]] = []
    seg = False
    for split, (path, data) in files.items():
        entries: dict[int, tuple[str, tuple[int, int] | None]] = {}
        for i, im in enumerate(data["images"]):
            where = f"{path}: images[{i}]"
            iid, name = _get(im, "id", where, "int"), _get(im, "file_name", where, "str")
            if iid in entries:
                raise UserError(f"{where}.id: image id {iid} is listed twice")
            hw = None
            if rle_masks:
                hw = (_get(im, "height", where, "int"), _get(im, "width", where, "int"))
            entries[iid] = (name, hw)
        per_image: dict[int, list[dict[str, Any]]] = {iid: [] for iid in entries}
        for i, a in enumerate(data["annotations"]):
            where = f"{path}: annotations[{i}]"
            iid = _get(a, "image_id", where, "int")
            if iid not in entries:
                raise UserError(f"{where}.image_id: {iid} is not an id in {path.name}'s images")
            inst = _annotation(a, where, class_of, k)
            seg = seg or bool(inst["rings"]) or inst["rle"] is not None
            per_image[iid].append(inst)
        base = _image_base(src, images, split, path, [n for n, _ in entries.values()])
        for iid, (name, hw) in entries.items():
            image = base / name
            if image.resolve().is_relative_to(src.resolve()) and not image.is_file():  # outside: the engine counts and drops it
                items.append((split, None, {}, f"{path}: image {iid} {name}", None))
                continue
            items.append((split, image, {"iid": iid, "insts": per_image[iid]}, str(image), hw))
    _carve(items, val_fraction if "val" not in anns else 0.0, test_fraction if "test" not in anns else 0.0, seed)
    tasks = ["det", *(["seg"] if seg or rle_masks else []), *(["inst"] if seg else []), *(["pose"] if spec else [])]
    classes = [names[c] for c in sorted(names)]
    meta = Meta(classes=classes, tasks=tasks, mask_classes=["background", *classes] if seg or rle_masks else [],
                keypoints=spec, source=f"coco:{src.name}", class_ids=sorted(names))

    def samples() -> Iterator[SourceSample]:
        for split, image, raw, where, hw in items:
            if image is None:
                yield SourceSample(split=split, image=None, where=where)
                continue
            # rendered in the engine's worker processes, one at a time
            mask = partial(render_mask, raw["insts"], height=hw[0], width=hw[1]) if hw else None
            yield SourceSample(split=split, image=image, ann=_ann_dict(raw["insts"], raw["iid"], seg, bool(spec)),
                               mask=mask, where=where)

    return Conversion(meta=meta, samples=samples(), root=src, total=len(items))


def _carve(items: list[Any], val: float, test: float, seed: int) -> None:
    """Moves a share of the train images (by path) to val / test, in place."""
    if not val and not test:
        return
    keys = [str(it[1] or it[3]) for it in items if it[0] == "train"]
    assign = split_by_ratio(keys, val_fraction=val, test_fraction=test, seed=seed)
    for n, it in enumerate(items):
        if it[0] == "train":
            items[n] = (assign[str(it[1] or it[3])], *it[1:])


def _ann_pairs(pairs: list[str] | None, src: Path) -> list[str]:
    """``--ann`` paths as given, or relative to ``--src`` when only that exists."""
    out = []
    for pair in pairs or []:
        split, sep, path = pair.partition("=")
        split, path = (split, path) if sep else ("train", pair)
        if not Path(path).is_file() and (src / path).is_file():
            path = str(src / path)
        out.append(f"{split}={path}")
    return out


def from_args(fmt: str) -> Callable[[argparse.Namespace], Conversion]:
    """The CLI's reader for ``--format coco``."""

    def coco(args: argparse.Namespace) -> Conversion:
        if args.drop_background:
            raise UserError("--drop-background: COCO images without annotations are kept (normal in COCO)")
        files = split_files(_ann_pairs(args.ann, Path(args.src)), "--ann")
        return read_coco(args.src, anns=files, images=args.images, rle_masks=args.rle_masks,
                         val_fraction=args.val_fraction, test_fraction=args.test_fraction, seed=args.seed)

    return coco
