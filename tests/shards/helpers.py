"""Test helpers: an in-memory fake store, a byte-discarding store, payload builders."""

from __future__ import annotations

import hashlib
import io
from typing import Iterator

import msgpack
from atdata_dagster.stores.base import DataStore


class MemorySink:
    def __init__(self, store: "MemoryStore", prefix: str):
        self.store, self.prefix = store, prefix
        self.buf = bytearray()
        self.state = "open"
        store.sinks.append(self)

    def write(self, data) -> None:
        assert self.state == "open"
        self.buf += data

    def commit(self, index: int, sha256: str) -> str:
        assert hashlib.sha256(self.buf).hexdigest() == sha256
        url = f"mem://{self.prefix}/data--{sha256[:8]}--{index:06d}.tar"
        self.store.objects[url] = bytes(self.buf)
        self.state = "committed"
        return url

    def abort(self) -> None:
        self.state = "aborted"
        self.buf = bytearray()


class MemoryStore(DataStore):
    """In-memory fake store (unit tests of writer logic only)."""

    def __init__(self):
        self.objects: dict[str, bytes] = {}
        self.sinks: list[MemorySink] = []

    def open_sink(self, prefix: str) -> MemorySink:
        return MemorySink(self, prefix)

    def put_sidecar(self, shard_url: str, suffix: str, data: bytes) -> str:
        url = shard_url[:-4] + suffix
        self.objects[url] = data
        return url

    def open_read(self, url: str):
        return io.BytesIO(self.objects[url])

    def owns(self, url: str) -> bool:
        return url.startswith("mem://")

    def iter_shard_urls(self) -> Iterator[str]:
        return iter(sorted(self.objects))

    def delete(self, url: str) -> None:
        self.objects.pop(url, None)


class NullSink:
    """Counts bytes and discards them (for memory measurements)."""

    def __init__(self):
        self.n = 0

    def write(self, data) -> None:
        self.n += len(data)

    def commit(self, index: int, sha256: str) -> str:
        return f"null://{index}"

    def abort(self) -> None:
        pass


class NullStore(MemoryStore):
    def open_sink(self, prefix: str) -> NullSink:  # type: ignore[override]
        return NullSink()


def payload(i: int, **extra) -> bytes:
    return msgpack.packb({"i": i, "name": f"s{i}", **extra})
