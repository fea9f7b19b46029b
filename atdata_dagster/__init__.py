"""Typed machine-learning datasets as first-class Dagster assets.

The engine (``local``, ``packable``, ``Dataset``, stores, ``Index``) imports no Dagster
code; the Dagster names (``AtdataIndexResource``, ``AtdataIOManager``, checks and
promotion factories) are loaded on first access, so a notebook that only uses the
engine does not pay for importing Dagster.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from . import local
from .dataset import Dataset, SampleBatch, write_samples
from .loading import DatasetDict, get_default_index, load_dataset, set_default_index
from .errors import AtdataError
from .files import sha256_bytes, sha256_file
from .shards.reader import verify_checksums
from .shards.sinks import ShardWriteResult
from .index.entry import LocalDatasetEntry, LocalSchemaRecord, compute_cid, generate_cid, generate_cid_from_bytes, verify_cid
from .index.index import Index, Repository, create_repository
from .lenses import Lens, LensNetwork, lens
from .stores.sources import BlobSource, S3Source, URLSource
from .shards.query import ManifestField, QueryExecutor, SampleLocation, ShardManifest
from .samples import DictSample, PackableSample, packable
from .stores.disk import LocalDiskStore

__version__ = "0.1.0"

# Dagster integration: attribute name -> module, imported lazily.
_LAZY = {
    "AtdataIndexResource": ".resources",
    "LocalDiskStoreConfig": ".resources",
    "S3DataStoreConfig": ".resources",
    "RepositoryConfig": ".resources",
    "AtdataIOManager": ".io_manager",
    "dataset_asset": ".assets",
    "dataset_multi_asset": ".assets",
    "observable_dataset": ".observe",
    "validate_definitions": ".validation",
    "build_dataset_observation_sensor": ".observe",
    "build_dataset_checks": ".checks",
    "build_promotion_job": ".promotion",
    "build_promotion_sensor": ".promotion",
    "build_promotion_schedule": ".promotion",
    "S3DataStore": ".stores.s3",
    "AtmosphereClient": ".atmosphere",
    "Atmosphere": ".atmosphere.compat",
    "AtmosphereIndex": ".atmosphere.compat",
    "AtUri": ".atmosphere.compat",
    "SchemaPublisher": ".atmosphere.compat",
    "SchemaLoader": ".atmosphere.compat",
    "DatasetPublisher": ".atmosphere.compat",
    "DatasetLoader": ".atmosphere.compat",
    "LabelPublisher": ".atmosphere.compat",
    "LabelLoader": ".atmosphere.compat",
    "PDSBlobStore": ".atmosphere.compat",
}

if TYPE_CHECKING:  # pragma: no cover
    from .assets import dataset_asset, dataset_multi_asset
    from .atmosphere import AtmosphereClient
    from .atmosphere.compat import (
        Atmosphere, AtmosphereIndex, AtUri, DatasetLoader, DatasetPublisher, LabelLoader, LabelPublisher, PDSBlobStore,
        SchemaLoader, SchemaPublisher,
    )
    from .checks import build_dataset_checks
    from .observe import build_dataset_observation_sensor, observable_dataset
    from .io_manager import AtdataIOManager
    from .promotion import build_promotion_job, build_promotion_schedule, build_promotion_sensor
    from .resources import AtdataIndexResource, LocalDiskStoreConfig, RepositoryConfig, S3DataStoreConfig
    from .stores.s3 import S3DataStore
    from .validation import validate_definitions


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'atdata_dagster' has no attribute {name!r}")
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "AtdataError",
    "AtdataIOManager",
    "AtdataIndexResource",
    "AtUri",
    "Atmosphere",
    "AtmosphereClient",
    "AtmosphereIndex",
    "BlobSource",
    "Dataset",
    "DatasetLoader",
    "DatasetPublisher",
    "DatasetDict",
    "DictSample",
    "Index",
    "LabelLoader",
    "LabelPublisher",
    "Lens",
    "LensNetwork",
    "LocalDatasetEntry",
    "LocalDiskStore",
    "LocalDiskStoreConfig",
    "LocalSchemaRecord",
    "ManifestField",
    "PDSBlobStore",
    "PackableSample",
    "QueryExecutor",
    "Repository",
    "RepositoryConfig",
    "S3DataStore",
    "S3DataStoreConfig",
    "S3Source",
    "SampleBatch",
    "SchemaLoader",
    "SchemaPublisher",
    "SampleLocation",
    "ShardManifest",
    "URLSource",
    "ShardWriteResult",
    "__version__",
    "build_dataset_checks",
    "build_dataset_observation_sensor",
    "build_promotion_job",
    "build_promotion_schedule",
    "build_promotion_sensor",
    "compute_cid",
    "create_repository",
    "dataset_asset",
    "dataset_multi_asset",
    "generate_cid",
    "generate_cid_from_bytes",
    "get_default_index",
    "lens",
    "load_dataset",
    "local",
    "observable_dataset",
    "packable",
    "set_default_index",
    "sha256_bytes",
    "sha256_file",
    "validate_definitions",
    "verify_checksums",
    "verify_cid",
    "write_samples",
]
