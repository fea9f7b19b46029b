"""Fixtures for the Dagster integration tests: a temporary index, data store and instance."""

import warnings

import dagster as dg
import pytest

from atdata_dagster.io_manager import AtdataIOManager
from atdata_dagster.resources import AtdataIndexResource, LocalDiskStoreConfig


@pytest.fixture(autouse=True)
def _quiet_dagster_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        warnings.simplefilter("ignore", dg.PreviewWarning)
        yield


@pytest.fixture
def index_resource(tmp_path) -> AtdataIndexResource:
    """An index resource on a temporary SQLite file and data directory (never the home dir)."""
    return AtdataIndexResource(
        path=str(tmp_path / "index.db"),
        data_store=LocalDiskStoreConfig(root=str(tmp_path / "data")),
        atmosphere=False,
    )


@pytest.fixture
def io_manager(index_resource) -> AtdataIOManager:
    return AtdataIOManager(index=index_resource)


@pytest.fixture
def instance(tmp_path):
    """A real DagsterInstance with in-memory run and event storage (fast), artifacts under tmp_path."""
    inst = dg.DagsterInstance.ephemeral(tempdir=str(tmp_path / "dagster_home"))
    try:
        yield inst
    finally:
        inst.dispose()


@pytest.fixture
def index(index_resource):
    """The engine Index behind ``index_resource`` (closed afterwards)."""
    idx = index_resource.build_index()
    yield idx
    idx.close()
