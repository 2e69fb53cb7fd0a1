"""Regression sources: a CSV table (a header row, a path column, target columns) or list files of
``relative/path value [value ...]`` lines, one float per target name.

Every row becomes one sample with ``targets`` in its JSON, in the order of ``--targets``; ``meta.json`` names
the targets and gives the mean and standard deviation of each over the training split (``target_mean``,
``target_std``), which task ``reg`` normalises with. A missing, non-numeric, NaN or infinite value drops its
row: counted in the account under its reason, and named as ``FILE:LINE`` on stderr (``--strict``: an error).

``--format list`` without ``--targets`` is the classification list reader, as before.
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from objmtl.data.convert.engine import Conversion, SourceSample
from objmtl.data.convert.options import split_files
from objmtl.data.convert.splits import split_by_ratio
from objmtl.data.reg_synth import target_stats
from objmtl.data.schema import Meta
from objmtl.errors import UserError

__all__ = ["BAD_COUNT", "NOT_FINITE", "NOT_NUMBER", "NO_VALUE", "read_target_csv", "read_target_lists"]

log = logging.getLogger(__name__)

NO_VALUE = "target value missing"
NOT_NUMBER = "target value not a number"
NOT_FINITE = "target value NaN or inf"
BAD_COUNT = "wrong number of target values"
PATH_COLUMNS = ("path", "image", "file", "filename")
_SHOWN = 10  # rows named on stderr; the account counts them all

_Row = tuple[str, list[str], str]  # (relative image path, raw values, FILE:LINE)


def _values(raw: list[str], names: list[str]) -> tuple[list[float] | None, str]:
    """The row's floats, or None and the reason with the first bad value."""
    if len(raw) != len(names):
        return None, BAD_COUNT
    out = []
    for cell in raw:
        text = (cell or "").strip()
        if not text:
            return None, NO_VALUE
        try:
            value = float(text)
        except ValueError:
            return None, NOT_NUMBER
        if not math.isfinite(value):
            return None, NOT_FINITE
        out.append(value)
    return out, ""


def _csv_rows(path: Path, targets: list[str] | None, path_column: str | None) -> tuple[list[str], list[_Row]]:
    try:
        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, [])]
            lines = [(reader.line_num, row) for row in reader]
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a UTF-8 text file") from None
    if not header:
        raise UserError(f"{path}: empty file (expected a header row, e.g. path,age)")
    column = path_column or next((c for c in PATH_COLUMNS if c in header), None)
    if column is None or column not in header:
        raise UserError(f"{path}:1: no path column {path_column or ' / '.join(PATH_COLUMNS)!r} in the header "
                        f"{', '.join(header)} (--path-column NAME)")
    names = targets or [h for h in header if h != column]
    missing = [n for n in names if n not in header]
    if missing or not names:
        raise UserError(f"{path}:1: no column {', '.join(missing) or '(no target columns)'} in the header "
                        f"{', '.join(header)} (--targets NAME[,NAME])")
    at = {h: i for i, h in enumerate(header)}
    rows = []
    for n, row in lines:
        if not any(cell.strip() for cell in row):
            continue
        cells = [row[at[h]] if at[h] < len(row) else "" for h in (column, *names)]
        rows.append((cells[0].strip(), cells[1:], f"{path}:{n}"))
    return names, rows


def _list_rows(path: Path) -> list[_Row]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a UTF-8 text file") from None
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        rel, *values = line.split()
        rows.append((rel, values, f"{path}:{n}"))
    return rows


def _image(src: Path, rel: str) -> Path | None:
    """The row's image: None when it is missing (the engine counts it); a path that leaves ``src`` is kept for
    the engine to refuse."""
    path = src / rel
    return path if path.is_file() or ".." in Path(rel).parts or Path(rel).is_absolute() else None


def _conversion(src: Path, rows: dict[str, list[_Row]], names: list[str], *, name: str, val_fraction: float,
                test_fraction: float, seed: int, strict: bool) -> Conversion:
    if not any(rows.values()):
        raise UserError(f"{src}: the {name} files name no images")
    drops: Counter[str] = Counter()
    kept: list[tuple[str, str, list[float], str]] = []  # (split, rel, values, where)
    for split, split_rows in rows.items():
        for rel, raw, where in split_rows:
            values, reason = _values(raw, names)
            if values is None:
                shown = ", ".join(f"{k}={v!r}" for k, v in zip(names, raw, strict=False))
                detail = f"{where}: {reason} ({shown}): row dropped"
                if strict:
                    raise UserError(detail.replace("row dropped", "--strict turns every drop into an error"))
                if sum(drops.values()) < _SHOWN:
                    log.warning(detail)
                drops[reason] += 1
                continue
            kept.append((split, rel, values, where))
    if sum(drops.values()) > _SHOWN:
        log.warning("... %d more rows dropped (the account counts them all)", sum(drops.values()) - _SHOWN)
    if not kept:
        raise UserError(f"{src}: no row of the {name} files has valid targets ({dict(drops)})")
    carve = {"val": val_fraction if "val" not in rows else 0.0, "test": test_fraction if "test" not in rows else 0.0}
    if any(carve.values()):
        assign = split_by_ratio([w for s, _, _, w in kept if s == "train"], val_fraction=carve["val"],
                                test_fraction=carve["test"], seed=seed)
        kept = [(assign.get(w, s) if s == "train" else s, r, v, w) for s, r, v, w in kept]
    samples = [SourceSample(split=s, image=_image(src, rel), ann={"targets": v}, where=w) for s, rel, v, w in kept]
    # the mean and std of what is written: a row whose image is missing is dropped by the engine (and counted)
    train = [s.ann["targets"] for s in samples if s.split == "train" and s.image is not None]
    if not train:
        raise UserError(f"{src}: no training rows with an image left to take the targets' mean and std from")
    mean, std = target_stats(train)
    meta = Meta(classes=[], tasks=["reg"], source=f"{name}:{src.name}",
                extra={"targets": list(names), "target_mean": mean, "target_std": std})
    return Conversion(meta=meta, samples=samples, root=src, total=len(samples), events=drops)


def read_target_csv(src: str | Path, *, tables: dict[str, Path], targets: list[str] | None = None,
                    path_column: str | None = None, val_fraction: float = 0.2, test_fraction: float = 0.0,
                    seed: int = 0, strict: bool = False) -> Conversion:
    """Reads CSV tables with a header row (see the module docstring).

    Args:
        src: the folder the image paths are relative to.
        tables: split -> CSV file (one table for train carves val and test by the fractions).
        targets: the target columns, in order; default every column but the path column.
        path_column: the column of image paths; default the first of ``path, image, file, filename``.
        strict: a dropped row is an error.
    """
    src = Path(src)
    if not src.is_dir():
        raise UserError(f"{src}: no such folder")
    if not tables:
        raise UserError("--format csv needs --ann SPLIT=FILE (e.g. --ann train=labels.csv)")
    parsed = {split: _csv_rows(Path(p), targets, path_column) for split, p in tables.items()}
    names = next(iter(parsed.values()))[0]
    for split, (other, _) in parsed.items():
        if other != names:
            raise UserError(f"{tables[split]}: target columns {other} differ from {names} of the first table")
    return _conversion(src, {s: r for s, (_, r) in parsed.items()}, names, name="csv", val_fraction=val_fraction,
                       test_fraction=test_fraction, seed=seed, strict=strict)


def read_target_lists(src: str | Path, *, lists: dict[str, Path], targets: list[str], val_fraction: float = 0.2,
                      test_fraction: float = 0.0, seed: int = 0, strict: bool = False) -> Conversion:
    """Reads list files of ``relative/path value [value ...]`` lines, one value per name in ``targets``."""
    src = Path(src)
    if not src.is_dir():
        raise UserError(f"{src}: no such folder")
    if not lists:
        raise UserError("--format list needs --ann SPLIT=FILE (e.g. --ann train=train.txt)")
    rows = {split: _list_rows(Path(p)) for split, p in lists.items()}
    return _conversion(src, rows, targets, name="list", val_fraction=val_fraction, test_fraction=test_fraction,
                       seed=seed, strict=strict)


def _target_names(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names or len(set(names)) != len(names):
        raise UserError(f"--targets {text!r}: give distinct names separated by commas (e.g. --targets age,score)")
    return names


def from_args(fmt: str) -> Callable[[argparse.Namespace], Conversion]:
    def table(args: argparse.Namespace) -> Conversion:
        return read_target_csv(args.src, tables=split_files(args.ann, "--ann", src=args.src),
                               targets=_target_names(args.targets), path_column=args.path_column,
                               val_fraction=args.val_fraction, test_fraction=args.test_fraction, seed=args.seed,
                               strict=args.strict)

    def lists(args: argparse.Namespace) -> Conversion:
        names = _target_names(getattr(args, "targets", None))
        if names is None:  # no targets: the classification list files
            from objmtl.data.convert import cli_readers

            return cli_readers.from_args("list")(args)
        return read_target_lists(args.src, lists=split_files(args.ann, "--ann", src=args.src), targets=names,
                                 val_fraction=args.val_fraction, test_fraction=args.test_fraction, seed=args.seed,
                                 strict=args.strict)

    return {"csv": table, "list": lists}[fmt]
