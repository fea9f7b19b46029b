"""Fixtures for the shard engine tests: a real disk store and an in-memory fake."""

from __future__ import annotations

import pytest

from atdata_dagster.stores.disk import LocalDiskStore

from .helpers import MemoryStore


@pytest.fixture
def store(tmp_path) -> LocalDiskStore:
    return LocalDiskStore(tmp_path / "store")


@pytest.fixture
def mem_store() -> MemoryStore:
    return MemoryStore()
