"""The IndexProvider contract, run against every provider on its real server."""

from __future__ import annotations

import time
from datetime import datetime

import pytest

from atdata_dagster.errors import ConfigurationError, NotFoundError, ProviderError
from atdata_dagster.index.entry import LabelRecord, LocalDatasetEntry, compute_cid
from atdata_dagster.index.providers import provider_from_url

from ._raw import Raw

REF = "atdata://local/schema/Img@1.0.0"


def entry(name: str, n: int = 0, *, metadata=None, ref: str = REF, legacy_uuid=None) -> LocalDatasetEntry:
    return LocalDatasetEntry(
        name=name,
        schema_ref=ref,
        data_urls=[f"/data/{name}/data--{n:08x}--{k:06d}.tar" for k in range(2)],
        metadata=metadata,
        _legacy_uuid=legacy_uuid,
    )


def tick() -> None:
    """Let the clock move on between writes whose order a test depends on."""
    time.sleep(0.005)


# -- entries -------------------------------------------------------------------------------
def test_put_then_get_entry_round_trips_every_field(provider):
    e = entry("digits", metadata={"checksums": {"a": "ff" * 32}, "rows": 10, "nested": [1, {"x": None}]},
              legacy_uuid="0f1e2d3c")
    provider.put_entry(e)

    got = provider.get_entry(e.cid)

    assert (got.name, got.schema_ref, got.data_urls, got.metadata) == (e.name, e.schema_ref, e.data_urls, e.metadata)
    assert got.cid == e.cid == compute_cid(e.schema_ref, e.data_urls)
    assert got._legacy_uuid == "0f1e2d3c"
    assert datetime.fromisoformat(got.created_at).tzinfo is not None  # ISO 8601 with offset


def test_get_missing_entry_raises_not_found_which_is_a_keyerror(provider):
    with pytest.raises(NotFoundError) as info:
        provider.get_entry("bafyreidoesnotexist")
    assert isinstance(info.value, KeyError)
    assert "bafyreidoesnotexist" in str(info.value)
    with pytest.raises(KeyError):
        provider.get_entry_by_name("never-written")


def test_writing_the_same_cid_again_replaces_the_entry_instead_of_duplicating(provider):
    e = entry("ds", metadata={"v": 1})
    provider.put_entry(e)
    provider.put_entry(entry("ds", metadata={"v": 2}))
    assert [x.metadata for x in provider.iter_entries()] == [{"v": 2}]

    provider.put_entry(entry("ds", metadata=None))  # a rewrite without metadata clears it
    assert provider.get_entry(e.cid).metadata is None
    assert len(list(provider.iter_entries())) == 1


def test_same_urls_under_a_new_name_rename_the_entry_as_in_atdata(provider):
    old = entry("old-name")
    provider.put_entry(old)
    renamed = LocalDatasetEntry("new-name", old.schema_ref, old.data_urls)
    assert renamed.cid == old.cid  # the CID does not cover the name

    provider.put_entry(renamed)

    assert provider.get_entry(old.cid).name == "new-name"
    assert provider.get_entry_by_name("new-name").cid == old.cid
    with pytest.raises(NotFoundError):
        provider.get_entry_by_name("old-name")


def test_get_entry_by_name_returns_the_most_recently_written_version(provider):
    v1, v2, v3 = entry("mnist", 1), entry("mnist", 2), entry("mnist", 3)
    for e in (v1, v2, v3):
        provider.put_entry(e)
        tick()
    assert provider.get_entry_by_name("mnist").cid == v3.cid

    provider.put_entry(v1)  # rewriting an older version makes it the newest again
    assert provider.get_entry_by_name("mnist").cid == v1.cid
    assert provider.get_entry_by_name("mnist").created_at > provider.get_entry(v3.cid).created_at


def test_metadata_update_replaces_metadata_only(provider):
    e = entry("ds", metadata={"a": 1})
    provider.put_entry(e)

    provider.update_entry_metadata(e.cid, {"a": 1, "at_uri": "at://did:plc:x/science.alt.dataset.entry/1"})
    got = provider.get_entry(e.cid)
    assert got.metadata == {"a": 1, "at_uri": "at://did:plc:x/science.alt.dataset.entry/1"}
    assert (got.name, got.data_urls, got.cid) == (e.name, e.data_urls, e.cid)

    provider.update_entry_metadata(e.cid, None)
    assert provider.get_entry(e.cid).metadata is None

    with pytest.raises(NotFoundError):
        provider.update_entry_metadata("bafyreinothere", {"a": 2})


def test_metadata_that_msgpack_cannot_encode_is_rejected_before_anything_is_written(provider):
    e = entry("ds", metadata={"bad": object()})
    with pytest.raises(ConfigurationError, match="msgpack") as info:
        provider.put_entry(e, label=LabelRecord("ds", e.cid))
    assert isinstance(info.value, ValueError)
    with pytest.raises(NotFoundError):
        provider.get_entry(e.cid)
    with pytest.raises(NotFoundError):
        provider.get_label("ds")


def test_delete_entry_removes_it_and_its_labels_but_nothing_else(provider):
    a, b = entry("a"), entry("b")
    provider.put_entry(a, label=LabelRecord("a", a.cid))
    provider.put_entry(b, label=LabelRecord("b", b.cid))
    provider.put_label(LabelRecord("alias", a.cid, version="v1"))

    provider.delete_entry(a.cid)

    with pytest.raises(NotFoundError):
        provider.get_entry(a.cid)
    with pytest.raises(NotFoundError):
        provider.get_label("a")
    with pytest.raises(NotFoundError):
        provider.get_label("alias", "v1")
    assert provider.get_entry(b.cid).name == "b"
    assert provider.get_label("b").cid == b.cid
    assert [e.cid for e in provider.iter_entries()] == [b.cid]
    provider.delete_entry(a.cid)  # deleting again is not an error


# -- labels ----------------------------------------------------------------------------------
def test_put_entry_with_label_writes_entry_and_label_together(provider):
    e = entry("ds")
    provider.put_entry(e, label=LabelRecord("ds", e.cid, version="", description="first"))

    label = provider.get_label("ds", "")
    assert (label.name, label.cid, label.version, label.description) == ("ds", e.cid, "", "first")
    assert provider.get_entry(label.cid).name == "ds"


def test_put_entry_with_label_is_atomic_when_the_label_write_fails(provider):
    e = entry("ds")
    Raw.of(provider).refuse_label_writes("ds")  # a trigger (SQL) / a wrong-typed key (Redis)

    with pytest.raises(ProviderError):
        provider.put_entry(e, label=LabelRecord("ds", e.cid))

    with pytest.raises(NotFoundError):
        provider.get_entry(e.cid)
    assert list(provider.iter_entries()) == []


def test_get_label_without_version_returns_the_latest_written_label(provider):
    a, b, c = entry("ds", 1), entry("ds", 2), entry("ds", 3)
    provider.put_label(LabelRecord("ds", a.cid, version="1.0"))
    tick()
    provider.put_label(LabelRecord("ds", b.cid, version=""))
    tick()
    provider.put_label(LabelRecord("ds", c.cid, version="2.0"))
    assert provider.get_label("ds").cid == c.cid
    tick()
    provider.put_label(LabelRecord("ds", a.cid, version=""))  # re-pointing makes it newest
    latest = provider.get_label("ds")
    assert (latest.cid, latest.version) == (a.cid, "")
    assert provider.get_label("ds", "1.0").cid == a.cid
    assert provider.get_label("ds", "2.0").cid == c.cid


def test_labels_are_upserted_by_name_and_version(provider):
    a, b = entry("x", 1), entry("x", 2)
    provider.put_label(LabelRecord("x", a.cid, version="v"))
    provider.put_label(LabelRecord("x", b.cid, version="v", description="moved"))
    labels = [lab for lab in provider.iter_labels() if lab.name == "x"]
    assert [(lab.cid, lab.version, lab.description) for lab in labels] == [(b.cid, "v", "moved")]
    with pytest.raises(NotFoundError):
        provider.get_label("x", "other")


# -- schemas and lenses ----------------------------------------------------------------------
def test_schemas_are_upserted_listed_and_versioned(provider):
    provider.put_schema("Img", "1.0.0", '{"name": "Img", "version": "1.0.0", "fields": []}')
    provider.put_schema("Img", "1.1.0", '{"name": "Img", "version": "1.1.0", "fields": []}')
    provider.put_schema("Txt", "1.0.0", '{"name": "Txt"}')
    provider.put_schema("Img", "1.0.0", '{"name": "Img", "version": "1.0.0", "fields": [1]}')

    assert provider.get_schema_json("Img", "1.0.0") == '{"name": "Img", "version": "1.0.0", "fields": [1]}'
    assert sorted(provider.schema_versions("Img")) == ["1.0.0", "1.1.0"]
    assert sorted((n, v) for n, v, _ in provider.iter_schemas()) == [
        ("Img", "1.0.0"), ("Img", "1.1.0"), ("Txt", "1.0.0")]
    with pytest.raises(NotFoundError, match="Schema not found"):
        provider.get_schema_json("Img", "9.9.9")


def test_lenses_are_stored_in_atdatas_lens_table_or_keys(provider):
    provider.put_lens("to_gray", "1.0.0", '{"source_schema": "a", "view_schema": "b"}')
    assert provider.get_lens_json("to_gray", "1.0.0") == '{"source_schema": "a", "view_schema": "b"}'
    assert [(n, v) for n, v, _ in provider.iter_lenses()] == [("to_gray", "1.0.0")]
    with pytest.raises(NotFoundError):
        provider.get_lens_json("to_gray", "2.0.0")


# -- listing ---------------------------------------------------------------------------------
def test_pages_are_ordered_by_cid_disjoint_and_complete(provider):
    written = {entry(f"ds{i}", i).cid for i in range(23)}
    for i in range(23):
        provider.put_entry(entry(f"ds{i}", i))

    seen, after, pages = [], None, 0
    while True:
        page = provider.list_entries_page(limit=7, after=after)
        if not page:
            break
        pages += 1
        assert len(page) <= 7
        seen.extend(e.cid for e in page)
        after = page[-1].cid
    assert pages == 4
    assert seen == sorted(written)


def test_iter_entries_streams_every_entry_with_small_batches(provider):
    provider.put_entries_bulk((entry(f"n{i % 5}", i) for i in range(40)), with_labels=True)

    cids = [e.cid for e in provider.iter_entries(batch_size=3)]

    assert len(cids) == 40 and cids == sorted(set(cids))
    assert {lab.name for lab in provider.iter_labels()} == {f"n{i}" for i in range(5)}


def test_bulk_write_with_labels_points_each_name_at_its_last_entry(provider):
    entries = [entry("same", i) for i in range(5)]
    assert provider.put_entries_bulk(entries, with_labels=True, chunk_size=2) == 5
    assert provider.get_label("same").cid == entries[-1].cid
    assert len(list(provider.iter_entries())) == 5


def test_a_second_provider_on_the_same_storage_sees_the_data(provider, provider_url):
    e = entry("persisted", metadata={"k": "v"})
    provider.put_entry(e, label=LabelRecord("persisted", e.cid))
    provider.put_schema("S", "1.0.0", "{}")

    with provider_from_url(provider_url) as again:
        assert again.get_entry(e.cid).metadata == {"k": "v"}
        assert again.get_label("persisted").cid == e.cid
        assert again.get_schema_json("S", "1.0.0") == "{}"


def test_closed_provider_refuses_work_with_a_provider_error(provider):
    provider.close()
    provider.close()  # idempotent
    with pytest.raises(ProviderError, match="closed"):
        provider.get_entry("bafyreix")


def test_resolve_name_prefers_the_latest_label_then_the_latest_entry(provider):
    a, b = entry("rn", 1), entry("rn", 2)
    provider.put_entry(a)
    tick()
    provider.put_entry(b)
    assert provider.resolve_name("rn").cid == b.cid  # no label: the latest entry so named
    provider.put_label(LabelRecord(name="rn", cid=a.cid))
    assert provider.resolve_name("rn").cid == a.cid  # a label wins, even over a newer entry
    with pytest.raises(NotFoundError):
        provider.resolve_name("missing")
