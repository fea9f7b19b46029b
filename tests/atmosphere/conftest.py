"""Helpers for the atmosphere tests: small real tar shards and clients on the local PDS."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import msgpack
import pytest

from atdata_dagster.atmosphere import AtmosphereBackend, AtmosphereClient
from atdata_dagster.index.entry import LocalDatasetEntry

SCHEMA = {
    "name": "Tiny",
    "version": "1.0.0",
    "fields": [
        {"name": "label", "fieldType": {"$type": "local#primitive", "primitive": "str"}, "optional": False},
        {"name": "value", "fieldType": {"$type": "local#primitive", "primitive": "int"}, "optional": False},
        {"name": "note", "fieldType": {"$type": "local#primitive", "primitive": "str"}, "optional": True},
    ],
    "description": "A tiny sample.",
    "createdAt": "2026-11-25T20:48:19.891457+00:00",
}


def tar_bytes(n: int = 3, *, seed: str = "a", pad: int = 0) -> bytes:
    """A WebDataset shard: members ``k<i>.msgpack`` with ``{label, value, note}`` maps."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for i in range(n):
            payload = msgpack.packb({"label": f"{seed}{i}", "value": i, "note": "x" * pad if pad else None})
            info = tarfile.TarInfo(f"k{i:06d}.msgpack")
            info.size = len(payload)
            info.mtime = 0
            tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


def write_shard(directory: Path, data: bytes, name: str | None = None) -> tuple[str, str]:
    """Write shard bytes to a file; return (absolute path, sha256 hex)."""
    sha = hashlib.sha256(data).hexdigest()
    path = directory / (name or f"data--{sha[:8]}--000000.tar")
    path.write_bytes(data)
    return str(path.resolve()), sha


def local_entry(directory: Path, name: str = "tiny", shards: list[bytes] | None = None,
                metadata: dict | None = None) -> LocalDatasetEntry:
    """A local entry over real shard files, with checksums as the Index records them."""
    urls, checks = [], {}
    for i, data in enumerate(shards or [tar_bytes()]):
        path, sha = write_shard(directory, data, name=f"{name}-{i:06d}.tar")
        urls.append(path)
        checks[path] = sha
    meta = {"checksums": checks, **(metadata or {})}
    return LocalDatasetEntry(name=name, schema_ref="atdata://local/schema/Tiny@1.0.0", data_urls=urls, metadata=meta)


def count(client: AtmosphereClient, did: str, collection: str) -> int:
    return sum(1 for _ in client.list_records(did, collection))


@pytest.fixture
def writer(pds, pds_account) -> AtmosphereClient:
    """A client for a fresh account (logs in lazily on first write)."""
    return AtmosphereClient(pds["url"], handle=pds_account["handle"], password=pds_account["password"],
                            plc_url=pds["plc_url"])


@pytest.fixture
def backend(writer) -> AtmosphereBackend:
    return AtmosphereBackend(writer)


@pytest.fixture
def anon(pds) -> AtmosphereBackend:
    """An anonymous backend on the same PDS (read-only)."""
    return AtmosphereBackend(AtmosphereClient(service_url=pds["url"]))
