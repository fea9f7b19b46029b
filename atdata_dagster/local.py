"""Seed-compatible namespace: ``from atdata_dagster import local`` then ``local.Index()``.

Mirrors atdata's ``atdata.local`` module so notebooks written against it keep working.
"""

from .index.entry import BasicIndexEntry, LabelRecord, LocalDatasetEntry, LocalSchemaRecord, compute_cid
from .index.index import Index, Repository, create_repository
from .index.providers import IndexProvider, create_provider
from .stores.disk import LocalDiskStore

__all__ = [
    "BasicIndexEntry",
    "Index",
    "IndexProvider",
    "LabelRecord",
    "LocalDatasetEntry",
    "LocalDiskStore",
    "LocalSchemaRecord",
    "Repository",
    "compute_cid",
    "create_provider",
    "create_repository",
]
