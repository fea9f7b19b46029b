"""Fault helpers for ``test_resource_faults.py`` (importable by child processes).

``python -m tests.adversarial.faults_child SPEC_JSON`` runs one ``Index.write`` in a
process whose file-size limit is ``spec["fsize"]`` bytes (``RLIMIT_FSIZE``, with
``SIGXFSZ`` ignored so an oversized write fails with ``EFBIG`` instead of killing the
process), and prints one JSON line: ``{"cid": ...}`` on success, or the exception's
type, its base classes and message.
"""

from __future__ import annotations

import json
import resource
import signal
import sys

from atdata_dagster.samples.packable import packable


@packable
class Blob:
    """A sample with a key and an opaque payload."""

    key: str
    data: bytes


def blobs(sizes: list[int], seed: int = 0) -> list[Blob]:
    """One sample per size; the payload bytes depend on the seed and position only."""
    out = []
    for i, size in enumerate(sizes):
        unit = bytes([(seed * 31 + i) % 251, i % 256, seed % 256, 7])
        out.append(Blob(key=f"b{i:04d}", data=(unit * (size // 4 + 1))[:size]))
    return out


def describe_error(exc: BaseException) -> dict:
    return {
        "type": type(exc).__name__,
        "bases": [c.__name__ for c in type(exc).__mro__],
        "message": str(exc),
    }


def write_once(spec: dict) -> dict:
    """The write the tests fault: ``spec`` gives index/store, name, sample sizes, metadata padding."""
    from atdata_dagster.index.index import Index
    from atdata_dagster.index.providers.sql import SqliteProvider
    from atdata_dagster.stores.disk import LocalDiskStore

    provider = SqliteProvider(spec["index"], timeout=spec.get("timeout", 30.0), retries=spec.get("retries", 8))
    index = Index(provider, data_store=LocalDiskStore(spec["data"]), atmosphere=None)
    metadata = {"padding": "p" * spec["pad"]} if spec.get("pad") else None
    try:
        items = blobs(spec["sizes"], spec.get("seed", 0))
        # Limit only now: the interpreter, imports and an open index are not what is tested.
        if spec.get("fsize"):
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (spec["fsize"], resource.RLIM_INFINITY))
        entry = index.write_samples(items, name=spec["name"], maxcount=spec.get("maxcount", 4), metadata=metadata)
        return {"cid": entry.cid}
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        return describe_error(exc)
    finally:
        index.close()


if __name__ == "__main__":
    print(json.dumps(write_once(json.loads(sys.argv[1]))))
