"""Where shards live: the store contract and the local-disk store (S3 lives in ``stores.s3``)."""

from .base import DataStore, ShardInfo, ShardSink, ShardWriteResult
from .disk import LocalDiskStore, validate_dataset_prefix
from . import s3 as _s3  # noqa: F401  registers the s3:// and http(s):// openers (boto3 loads lazily)

__all__ = [
    "DataStore",
    "LocalDiskStore",
    "ShardInfo",
    "ShardSink",
    "ShardWriteResult",
    "validate_dataset_prefix",
]
