"""A small, fast reader of tar members, for shards read start to end.

Python's ``tarfile`` parses each header with general-purpose code and builds a TarInfo per
member; for shards of small files that is most of the reading time (profiled: ~80 us of a
~200 us sample). This reads the 512-byte ustar headers directly, follows GNU long names and
pax ``path`` records, and seeks over members the caller does not want.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import BinaryIO

__all__ = ["iter_members"]

_BLOCK = 512
_FILE_TYPES = (b"0", b"\0", b"7")


def _number(field: bytes) -> int:
    if field[:1] and field[0] & 0x80:  # GNU base-256 for large values
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


def _skip(f: BinaryIO, n: int) -> None:
    if n <= 0:
        return
    try:
        f.seek(n, 1)
    except (OSError, ValueError, AttributeError):  # a pipe or a network stream: read past it
        while n > 0:
            chunk = f.read(min(n, 1 << 20))
            if not chunk:
                raise EOFError("tar ends inside a member") from None
            n -= len(chunk)


def _read(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise EOFError(f"tar ends inside a member ({len(data)} of {n} bytes)")
    return data


def _pax_path(records: bytes) -> str | None:
    for line in records.split(b"\n"):
        _, _, kv = line.partition(b" ")
        key, _, value = kv.partition(b"=")
        if key == b"path":
            return value.decode("utf-8")
    return None


def iter_members(f: BinaryIO, want: Callable[[str], bool]) -> Iterator[tuple[str, bytes | None]]:
    """Yields ``(name, data)`` for every regular file; ``data`` is None where ``want(name)`` is false.

    Raises ValueError on a header that is not tar, EOFError on a truncated member.
    """
    override: str | None = None
    first = True
    while True:
        header = f.read(_BLOCK)
        if not header.strip(b"\0"):
            if len(header) < _BLOCK and not header:
                raise EOFError("tar ends without its end-of-archive block (truncated?)")
            return  # the zero block that ends an archive
        if len(header) < _BLOCK:
            raise EOFError("tar ends inside a header")
        try:
            size, kind, checksum = _number(header[124:136]), header[156:157], _number(header[148:156])
        except ValueError:
            raise ValueError("not a tar header") from None
        # the first header's checksum tells a tar from another file (the field counts as spaces)
        if first and checksum != sum(header[:148]) + 256 + sum(header[156:]):
            raise ValueError("not a tar header (bad checksum)")
        first = False
        padded = -(-size // _BLOCK) * _BLOCK
        if kind in (b"L", b"x"):  # the next member's name: GNU long name, or a pax record
            data = _read(f, size)
            _skip(f, padded - size)
            override = data.rstrip(b"\0").decode("utf-8") if kind == b"L" else _pax_path(data) or override
            continue
        name = override
        if name is None:
            base = header[:100].split(b"\0", 1)[0].decode("utf-8")
            prefix = header[345:500].split(b"\0", 1)[0].decode("utf-8") if header[257:262] == b"ustar" else ""
            name = f"{prefix}/{base}" if prefix else base
        override = None
        if kind not in _FILE_TYPES:
            _skip(f, padded)
            continue
        if want(name):
            data = _read(f, size)
            _skip(f, padded - size)
            yield name, data
        else:
            _skip(f, padded)
            yield name, None
