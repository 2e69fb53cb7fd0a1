"""Parsing the converter options every format shares: split=FILE pairs, class-name files."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from objmtl.data.convert.splits import check_split
from objmtl.errors import UserError

__all__ = ["class_names", "locate", "split_files"]


def locate(path: str | Path, src: str | Path | None) -> Path:
    """A file named on the command line: as given if it exists, else relative to ``--src``."""
    path = Path(path)
    if src is not None and not path.is_absolute() and not path.exists() and (Path(src) / path).exists():
        return Path(src) / path
    return path


def split_files(pairs: list[str] | None, flag: str, *, src: str | Path | None = None) -> dict[str, Path]:
    """``["train=a.txt", "val=b.txt"]`` -> ``{"train": Path("a.txt"), ...}``; a bare path means train.

    Paths are taken as given, or relative to ``src`` when only that exists.
    """
    out: dict[str, Path] = {}
    for pair in pairs or []:
        split, sep, path = pair.partition("=")
        if not sep:
            split, path = "train", pair
        out[check_split(split)] = locate(path, src)
    for split, path in out.items():
        if not path.is_file():
            raise UserError(f"{flag} {split}={path}: no such file")
    return out


def class_names(path: str | Path, *, src: str | Path | None = None) -> list[str]:
    """Class names by id from a YOLO data yaml (``names:`` list or ``{id: name}``), a json list or
    mapping, or a text file with one name per line (a path as given, or relative to ``src``)."""
    path = locate(path, src)
    if not path.is_file():
        raise UserError(f"{path}: no such names file")
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml", ".json"):
        try:
            data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as e:
            raise UserError(f"{path}: can't parse ({str(e).splitlines()[0]})") from None
        if isinstance(data, dict):
            data = data.get("names", data.get("classes", data))
        if isinstance(data, dict):
            try:
                ids = sorted(int(k) for k in data)
            except ValueError:
                raise UserError(f"{path}: class ids must be integers") from None
            if ids != list(range(len(ids))):
                raise UserError(f"{path}: class ids must be 0..{len(ids) - 1} without gaps (got {ids[:10]}...)")
            return [str(data[k] if k in data else data[str(k)]) for k in ids]
        if isinstance(data, list):
            return [str(n) for n in data]
        raise UserError(f"{path}: no 'names' list or id -> name mapping inside")
    return [line.strip() for line in text.splitlines() if line.strip()]
