from objmtl.data.datamodule import ShardDataModule
from objmtl.data.schema import SCHEMA_VERSION, KeypointSpec, Meta, read_meta
from objmtl.data.shard_reader import ShardDataset
from objmtl.data.shard_writer import ShardSetWriter

__all__ = ["SCHEMA_VERSION", "KeypointSpec", "Meta", "ShardDataModule", "ShardDataset", "ShardSetWriter",
           "read_meta"]
