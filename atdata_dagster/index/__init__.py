"""The dataset index: entries, schemas, labels, providers and name routing."""

from .entry import BasicIndexEntry, LabelRecord, LocalDatasetEntry, LocalSchemaRecord, compute_cid
from .index import Index, Repository, create_repository

__all__ = [
    "BasicIndexEntry",
    "Index",
    "LabelRecord",
    "LocalDatasetEntry",
    "LocalSchemaRecord",
    "Repository",
    "compute_cid",
    "create_repository",
]
