"""Where shards live: the store contract, the local-disk store and the shard openers (S3 lives in ``stores.s3``)."""

from .base import DataStore, ShardInfo, ShardSink, ShardWriteResult
from .disk import LocalDiskStore, validate_dataset_prefix
from .http import HttpOpener
from .openers import RoutingOpener, StoreOpener, default_opener, store_opener
from .s3 import AnonymousS3Opener, DefaultChainS3Opener, S3Opener

__all__ = [
    "AnonymousS3Opener",
    "DataStore",
    "DefaultChainS3Opener",
    "HttpOpener",
    "LocalDiskStore",
    "RoutingOpener",
    "S3Opener",
    "ShardInfo",
    "ShardSink",
    "ShardWriteResult",
    "StoreOpener",
    "default_opener",
    "store_opener",
    "validate_dataset_prefix",
]
