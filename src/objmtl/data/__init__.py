"""Shards: schema, writer, streaming reader, datamodule. Imports are lazy, so that ``objmtl-data``
starts without loading Lightning."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["SCHEMA_VERSION", "KeypointSpec", "Meta", "ShardDataModule", "ShardDataset", "ShardSetWriter",
           "read_meta"]

_WHERE = {
    "ShardDataModule": "objmtl.data.datamodule",
    "SCHEMA_VERSION": "objmtl.data.schema",
    "KeypointSpec": "objmtl.data.schema",
    "Meta": "objmtl.data.schema",
    "read_meta": "objmtl.data.schema",
    "ShardDataset": "objmtl.data.shard_reader",
    "ShardSetWriter": "objmtl.data.shard_writer",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'objmtl.data' has no attribute {name!r}")
