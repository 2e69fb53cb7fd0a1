"""The one sample schema every task reads, and the ``meta.json`` that describes a shard set.

A shard set on disk::

    ROOT/meta.json
    ROOT/{train,val,test}/NNNNNN.tar

A sample in a tar is ``KEY.jpg`` (or ``.png``), ``KEY.json`` and, for semantic segmentation,
``KEY.mask.png`` (class ids, 255 = ignore). The JSON holds any of:

- ``label`` (int): the image class;
- instances as parallel lists: ``boxes`` (xyxy, absolute pixels), ``classes``, ``iscrowd``,
  ``area``, ``difficult``, ``truncated``, optional ``polygons`` (per instance a list of flat
  ``[x0, y0, x1, y1, ...]`` rings), optional ``rle`` (schema version 2: per instance null or a COCO RLE
  ``{"size": [h, w], "counts": str}`` of the image's size, for outlines that are not polygons: COCO's crowd
  regions and RLE objects) and optional ``keypoints`` (per instance K x 3: x, y, v);
- ``image_id``, ``width``, ``height``, ``source``.

Version 2 added ``rle`` and the ``inst`` annotation kind (instance masks: ``polygons`` or ``rle``) in
``meta.json``'s ``tasks``. Version 1 shards are read as they are; their ``seg`` sets from polygons carry
instance outlines too, so a version 1 ``tasks`` with ``seg`` also lists ``inst`` when read.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from objmtl.errors import UserError

__all__ = [
    "IGNORE_INDEX",
    "INSTANCE_KEYS",
    "SCHEMA_VERSION",
    "SPLITS",
    "KeypointSpec",
    "Meta",
    "ShardInfo",
    "read_meta",
    "validate_annotation",
    "write_meta",
]

SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
SPLITS = ("train", "val", "test")
IGNORE_INDEX = 255
TASKS = ("cls", "det", "seg", "pose", "inst")
INSTANCE_KEYS = ("boxes", "classes", "iscrowd", "area", "difficult", "truncated", "polygons", "rle",
                 "keypoints")
META_FILE = "meta.json"
# the meta.json keys Meta reads by name (``counts`` is derived); any other key lands in Meta.extra
_META_KEYS = {"classes", "tasks", "mask_classes", "keypoints", "splits", "source", "class_ids", "schema_version",
              "counts"}


@dataclass
class KeypointSpec:
    """Names, skeleton, left/right flip pairs and OKS sigmas of the K keypoints of an instance."""

    names: list[str]
    skeleton: list[list[int]] = field(default_factory=list)
    flip_pairs: list[list[int]] = field(default_factory=list)
    sigmas: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        k = len(self.names)
        if self.sigmas and len(self.sigmas) != k:
            raise UserError(f"keypoints: {len(self.sigmas)} sigmas for {k} keypoint names")
        for pair in [*self.skeleton, *self.flip_pairs]:
            if len(pair) != 2 or not all(0 <= int(i) < k for i in pair):
                raise UserError(f"keypoints: pair {pair} does not index {k} keypoints")


@dataclass
class ShardInfo:
    file: str  # relative to the split folder
    count: int


@dataclass
class Meta:
    """Everything a model needs to know about a shard set: heads are sized from it.

    Attributes:
        classes: names of the image / instance classes; ``label`` and ``classes`` index into it.
        mask_classes: names of the semantic mask ids (index = pixel value); 255 is ignore.
        keypoints: the keypoint spec when instances carry keypoints.
        splits: per split, the shard files and their sample counts.
        class_ids: the source dataset's id of each class (COCO category ids, YOLO ids with gaps),
            when they are not simply 0..n-1; results files written for the source use them.
        extra: the top-level ``meta.json`` keys this class does not name, kept as they are: a task kind
            outside the built-in ones describes its annotations there (e.g. its target names), configs read
            them as ``${meta:KEY}`` (``${meta:num_KEY}``: the length of a list).
    """

    classes: list[str]
    tasks: list[str]
    mask_classes: list[str] = field(default_factory=list)
    keypoints: KeypointSpec | None = None
    splits: dict[str, list[ShardInfo]] = field(default_factory=dict)
    source: str = ""
    class_ids: list[int] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.class_ids and len(self.class_ids) != len(self.classes):
            raise UserError(f"meta: {len(self.class_ids)} class_ids for {len(self.classes)} classes")

    def source_class_id(self, label: int) -> int:
        """The source dataset's id of contiguous class ``label`` (``label`` itself without ``class_ids``)."""
        return int(self.class_ids[label]) if self.class_ids else int(label)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def num_mask_classes(self) -> int:
        return len(self.mask_classes)

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoints.names) if self.keypoints else 0

    def count(self, split: str) -> int:
        return sum(s.count for s in self.splits.get(split, []))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        extra = d.pop("extra")
        d["counts"] = {split: self.count(split) for split in self.splits}
        return {**d, **{k: v for k, v in extra.items() if k not in d}}

    def field(self, key: str) -> Any:
        """A value for configs (``${meta:num_classes}``): a property or an attribute, by name."""
        if key in ("num_classes", "num_mask_classes", "num_keypoints"):
            return getattr(self, key)
        if key in ("classes", "mask_classes", "tasks"):
            return list(getattr(self, key))
        if key in ("keypoint_names", "skeleton", "flip_pairs", "sigmas"):
            spec = self.keypoints or KeypointSpec(names=[])
            return list(spec.names if key == "keypoint_names" else getattr(spec, key))
        if key in self.extra:
            return self.extra[key]
        if key.startswith("num_") and isinstance(self.extra.get(key[4:]), list):
            return len(self.extra[key[4:]])
        more = "".join(f", {k}" for k in self.extra)
        raise UserError(f"meta: no field {key!r} (known: num_classes, classes, num_mask_classes, "
                        f"mask_classes, num_keypoints, keypoint_names, skeleton, flip_pairs, sigmas, tasks{more})")


def write_meta(root: str | Path, meta: Meta) -> Path:
    path = Path(root) / META_FILE
    path.write_text(json.dumps(meta.to_dict(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def read_meta(root: str | Path) -> Meta:
    """Reads ``ROOT/meta.json``; a missing or foreign file is a :class:`UserError` naming the path."""
    root = Path(root)
    if not root.exists():
        raise UserError(f"{root}: no such shard folder")
    path = root / META_FILE
    if not path.is_file():
        raise UserError(f"{path}: missing; a shard set needs its meta.json (write one with objmtl-data)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a JSON object")
    version = raw.get("schema_version")
    if version not in READABLE_VERSIONS:
        raise UserError(f"{path}: schema version {version} is not a version this objmtl reads "
                        f"({', '.join(map(str, READABLE_VERSIONS))}); convert the data again with this objmtl")
    tasks = [str(t) for t in raw.get("tasks", [])]
    if version == 1 and "seg" in tasks and "inst" not in tasks:  # version 1 kept instance outlines as polygons
        tasks.append("inst")
    try:
        kp = raw.get("keypoints")
        return Meta(
            classes=[str(c) for c in raw["classes"]],
            tasks=tasks,
            schema_version=int(version),
            mask_classes=[str(c) for c in raw.get("mask_classes", [])],
            keypoints=KeypointSpec(**kp) if kp else None,
            splits={s: [ShardInfo(file=str(i["file"]), count=int(i["count"])) for i in shards]
                    for s, shards in raw.get("splits", {}).items()},
            source=str(raw.get("source", "")),
            class_ids=[int(i) for i in raw.get("class_ids", [])],
            extra={k: v for k, v in raw.items() if k not in _META_KEYS},
        )
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{path}: malformed meta ({type(e).__name__}: {e})") from None


def validate_annotation(ann: dict[str, Any], *, meta: Meta, where: str = "") -> None:
    """Checks one sample's JSON against the schema; raises ValueError naming the bad key."""
    if "label" in ann and ann["label"] is not None and not 0 <= int(ann["label"]) < meta.num_classes:
        raise ValueError(f"{where}: label {ann['label']} outside 0..{meta.num_classes - 1}")
    present = [k for k in INSTANCE_KEYS if k in ann]
    if not present:
        return
    n = len(ann.get("boxes", []))
    for key in present:
        if len(ann[key]) != n:
            raise ValueError(f"{where}: {key} has {len(ann[key])} entries for {n} boxes")
    for box in ann.get("boxes", []):
        if len(box) != 4:
            raise ValueError(f"{where}: box {box} is not x1, y1, x2, y2")
    for c in ann.get("classes", []):
        if not 0 <= int(c) < meta.num_classes:
            raise ValueError(f"{where}: class {c} outside 0..{meta.num_classes - 1}")
    k = meta.num_keypoints
    for kps in ann.get("keypoints", []):
        if len(kps) != k or any(len(p) != 3 for p in kps):
            raise ValueError(f"{where}: keypoints must be {k} x 3 per instance")
