"""ATProto ("atmosphere") layer: sessions, dataset records, blobs, publishing and resolution.

The Index uses :class:`AtmosphereBackend` (over an :class:`AtmosphereClient`) to
publish local entries (:meth:`~AtmosphereBackend.promote`), resolve ``@handle/name``
refs and read shards stored as PDS blobs (``at://<did>/blob/<cid>``).
"""

from .backend import (
    AtBlobOpener,
    AtmosphereBackend,
    DatasetRef,
    PromotionResult,
    ResolvedDataset,
    open_at_url,
    parse_dataset_ref,
)
from .client import AtmosphereClient, ReadLimits, Record, RecordRef, UploadedBlob
from .records import (
    NSID_ENTRY,
    NSID_LABEL,
    NSID_SCHEMA,
    AtUri,
    BlobRef,
    Checksum,
    DatasetLabel,
    DatasetSize,
    EntryRecord,
    SchemaRecord,
    StorageBlobs,
    StorageExternal,
    StorageHttp,
    StorageS3,
    blob_url,
    parse_blob_url,
)
from .sources import ShardSource, shard_sources_for

__all__ = [
    "AtBlobOpener",
    "AtmosphereBackend",
    "AtmosphereClient",
    "AtUri",
    "BlobRef",
    "Checksum",
    "DatasetLabel",
    "DatasetRef",
    "DatasetSize",
    "EntryRecord",
    "NSID_ENTRY",
    "NSID_LABEL",
    "NSID_SCHEMA",
    "PromotionResult",
    "ReadLimits",
    "Record",
    "RecordRef",
    "ResolvedDataset",
    "SchemaRecord",
    "ShardSource",
    "StorageBlobs",
    "StorageExternal",
    "StorageHttp",
    "StorageS3",
    "UploadedBlob",
    "blob_url",
    "open_at_url",
    "parse_blob_url",
    "parse_dataset_ref",
    "shard_sources_for",
]
