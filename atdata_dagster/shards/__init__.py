"""WebDataset tar shards: streaming writer, streaming reader and manifest sidecars."""

from .manifest import ManifestBuilder, read_manifest
from .reader import LocalOpener, ShardOpener, as_opener, iter_members, iter_samples, open_url, verify_shards
from .writer import ShardWriter, copy_dataset_to_store, write_samples_to_store

__all__ = [
    "LocalOpener",
    "ShardOpener",
    "as_opener",
    "ManifestBuilder",
    "ShardWriter",
    "copy_dataset_to_store",
    "iter_members",
    "iter_samples",
    "open_url",
    "read_manifest",
    "verify_shards",
    "write_samples_to_store",
]
