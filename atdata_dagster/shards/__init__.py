"""WebDataset tar shards: streaming writer, streaming reader and manifest sidecars."""

from .manifest import ManifestBuilder, read_manifest
from .reader import iter_members, iter_samples, open_url, register_opener, verify_shards
from .writer import ShardWriter, copy_dataset_to_store, write_samples, write_samples_to_store

__all__ = [
    "ManifestBuilder",
    "ShardWriter",
    "copy_dataset_to_store",
    "iter_members",
    "iter_samples",
    "open_url",
    "read_manifest",
    "register_opener",
    "verify_shards",
    "write_samples",
    "write_samples_to_store",
]
