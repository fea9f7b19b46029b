"""Process entry points for the concurrency tests (importable by spawned children)."""

from __future__ import annotations

from atdata_dagster.index.entry import LabelRecord, LocalDatasetEntry

SCHEMA_REF = "atdata://local/schema/Concurrent@1.0.0"


def expected_entry(worker: int, i: int) -> LocalDatasetEntry:
    return LocalDatasetEntry(
        name=f"w{worker}-e{i}",
        schema_ref=SCHEMA_REF,
        data_urls=[f"/data/w{worker}/e{i}/data--{worker:02d}{i:04d}--{k:06d}.tar" for k in range(3)],
        metadata={"worker": worker, "i": i, "checksums": {"x": "0" * 64}, "note": "é" * (i % 7)},
    )


def write_entries(url: str, worker: int, count: int, barrier, errors) -> None:
    """Open the provider at the same moment as the other workers, then write ``count``
    entries with their labels, plus a label ``shared`` that every worker overwrites."""
    try:
        from atdata_dagster.index.providers import provider_from_url

        barrier.wait(timeout=120)
        provider = provider_from_url(url)  # concurrent table creation on a fresh store
        try:
            for i in range(count):
                e = expected_entry(worker, i)
                provider.put_entry(e, label=LabelRecord(name=e.name, cid=e.cid))
                provider.put_label(LabelRecord(name="shared", cid=e.cid))
        finally:
            provider.close()
    except BaseException as ex:  # noqa: BLE001 - report everything to the parent
        errors.put(f"worker {worker}: {type(ex).__name__}: {ex}")
