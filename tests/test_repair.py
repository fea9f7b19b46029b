"""Repair restores damaged shards only from copies that hash to the recorded checksum, and says what it did."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from atdata_dagster import local, packable
from atdata_dagster.repair import repair_entry


@packable
class Item:
    label: int
    x: NDArray[np.float32]


def items(n: int = 30) -> list[Item]:
    return [Item(label=i, x=np.full(3, i, np.float32)) for i in range(n)]


LINEAGE = {"lineage": {"asset_key": ["team", "items"], "partition": None, "run_id": "r1", "upstream": []}}


@pytest.fixture
def index(tmp_path: Path) -> local.Index:
    idx = local.Index(path=str(tmp_path / "index.db"), data_store=local.LocalDiskStore(tmp_path / "data"), atmosphere=None)
    yield idx
    idx.close()


def corrupt(path: str) -> bytes:
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[:600] + b"\xff" * 16 + data[616:])
    return data


def test_a_corrupted_shard_is_restored_from_the_rematerialized_copy(index):
    old = index.write_samples(items(), name="items", maxcount=10, metadata=LINEAGE)
    good = corrupt(old.data_urls[1])
    new = index.write_samples(items(), name="items", maxcount=10, metadata=LINEAGE)  # what re-materializing does
    assert new.cid != old.cid and new.data_urls[1] != old.data_urls[1]  # a sibling file: the name was taken

    result = repair_entry(index, index.get_entry(old.cid))
    assert result.ok and [s.url for s in result.shards] == [old.data_urls[1]]
    assert result.shards[0].was == "mismatch" and result.shards[0].restored_from == new.data_urls[1]
    assert Path(old.data_urls[1]).read_bytes() == good
    assert set(index.verify(index.get_entry(old.cid)).values()) == {"ok"}
    assert repair_entry(index, index.get_entry(old.cid)).shards == []  # nothing left to do


def test_a_missing_shard_is_restored_from_another_entry_with_the_same_content(index):
    a = index.write_samples(items(), name="a", maxcount=10)
    b = index.write_samples(items(), name="b", maxcount=10)
    Path(a.data_urls[0]).unlink()
    result = repair_entry(index, a)
    assert result.ok and result.shards[0].was == "missing" and result.shards[0].restored_from == b.data_urls[0]
    assert set(index.verify(a).values()) == {"ok"}


def test_without_an_intact_copy_nothing_is_written_and_the_note_names_the_asset_to_rematerialize(index):
    entry = index.write_samples(items(), name="items", maxcount=10, metadata=LINEAGE)
    corrupt(entry.data_urls[2])
    damaged = Path(entry.data_urls[2]).read_bytes()
    result = repair_entry(index, entry)
    assert not result.ok and not result.shards[0].restored
    assert "re-materialize asset 'team/items'" in result.shards[0].note
    assert Path(entry.data_urls[2]).read_bytes() == damaged


def test_a_copy_that_is_itself_damaged_is_never_used(index):
    a = index.write_samples(items(), name="a", maxcount=10)
    b = index.write_samples(items(), name="b", maxcount=10)
    corrupt(a.data_urls[0])
    corrupt(b.data_urls[0])  # same checksum recorded, but its bytes no longer match it
    result = repair_entry(index, a)
    assert not result.ok and "no intact copy" in result.shards[0].note


def test_a_dry_run_checks_the_copy_but_writes_nothing(index):
    a = index.write_samples(items(), name="a", maxcount=10)
    b = index.write_samples(items(), name="b", maxcount=10)
    corrupt(a.data_urls[0])
    damaged = Path(a.data_urls[0]).read_bytes()
    result = repair_entry(index, a, dry_run=True)
    assert result.ok and result.dry_run and result.shards[0].restored_from == b.data_urls[0]
    assert Path(a.data_urls[0]).read_bytes() == damaged
