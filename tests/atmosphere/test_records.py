"""Record builders and parsers, field by field against the reference shapes (offline)."""

from __future__ import annotations

import base64
import hashlib
import json

import msgpack
import pytest

from atdata_dagster.atmosphere import (
    AtUri,
    DatasetLabel,
    EntryRecord,
    SchemaRecord,
    ShardSource,
    StorageBlobs,
    StorageExternal,
    StorageHttp,
    StorageS3,
    parse_dataset_ref,
    shard_sources_for,
)
from atdata_dagster.atmosphere.records import (
    NDARRAY_REF,
    BlobRef,
    BlobShard,
    Checksum,
    DatasetSize,
    HttpShard,
    S3Shard,
    blob_cid,
    decode_metadata,
    encode_metadata,
    parse_blob_url,
)
from atdata_dagster.errors import AtmosphereError, InvalidRefError, RecordError, SchemaError
from atdata_dagster.index.entry import LocalDatasetEntry

DID = "did:plc:abcdefghijklmnopqrstuvwx"
URI = f"at://{DID}/science.alt.dataset.schema/3kabc"

# The local record of the reference's schema example (section 7.2).
IMG = {
    "name": "Img",
    "version": "1.0.0",
    "fields": [
        {"name": "image", "fieldType": {"$type": "local#ndarray", "dtype": "uint8"}, "optional": False},
        {"name": "label", "fieldType": {"$type": "local#primitive", "primitive": "str"}, "optional": False},
        {"name": "raw", "fieldType": {"$type": "local#primitive", "primitive": "bytes"}, "optional": False},
        {"name": "tags", "fieldType": {"$type": "local#array", "items": {"$type": "local#primitive", "primitive": "str"}},
         "optional": False},
        {"name": "score", "fieldType": {"$type": "local#primitive", "primitive": "float"}, "optional": True},
    ],
    "description": "Image sample.",
    "createdAt": "2026-11-25T20:48:19.891457+00:00",
}


def canonical(value):
    """What a PDS hands back: map keys in DAG-CBOR order (length first, then bytewise)."""
    if isinstance(value, dict):
        return {k: canonical(value[k]) for k in sorted(value, key=lambda k: (len(k.encode()), k.encode()))}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    return value


# --------------------------------------------------------------------------- schema


def test_schema_record_matches_the_reference_shape():
    rec = SchemaRecord.from_local(IMG).to_record()
    assert rec["$type"] == "science.alt.dataset.schema"
    assert (rec["name"], rec["version"], rec["schemaType"]) == ("Img", "1.0.0", "jsonSchema")
    body = rec["schema"]
    assert body["$type"] == "science.alt.dataset.schema#jsonSchemaFormat"
    assert body["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert body["type"] == "object"
    assert body["properties"] == {
        "image": {"$ref": "https://alt.science/schemas/atdata-ndarray-bytes/1.0.0#/$defs/ndarray"},
        "label": {"type": "string"},
        "raw": {"type": "string", "format": "byte", "contentEncoding": "base64"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "score": {"type": "number"},
    }
    assert body["required"] == ["image", "label", "raw", "tags"]
    assert body["arrayFormatVersions"] == {"ndarrayBytes": "1.0.0"}
    assert rec["atdataSchemaVersion"] == 1
    assert rec["description"] == "Image sample."
    assert rec["createdAt"].endswith("+00:00")
    # Our one addition: the lossless local field list, under the record's metadata.
    assert rec["metadata"] == {"localFields": IMG["fields"]}
    assert set(rec) == {"$type", "name", "version", "schemaType", "schema", "createdAt", "atdataSchemaVersion",
                        "description", "metadata"}


def test_schema_types_and_empty_required():
    rec = SchemaRecord.from_local({"name": "P", "version": "2.0.0", "fields": [
        {"name": "i", "fieldType": {"$type": "local#primitive", "primitive": "int"}, "optional": True},
        {"name": "b", "fieldType": {"$type": "local#primitive", "primitive": "bool"}, "optional": True},
        {"name": "m", "fieldType": {"$type": "local#array", "items": {"$type": "local#array",
                                                                       "items": {"$type": "local#ndarray", "dtype": "float32"}}},
         "optional": True},
    ]}).to_record()
    props = rec["schema"]["properties"]
    assert props["i"] == {"type": "integer"} and props["b"] == {"type": "boolean"}
    assert props["m"] == {"type": "array", "items": {"type": "array", "items": {"$ref": NDARRAY_REF}}}
    assert "required" not in rec["schema"]
    assert "description" not in rec
    no_arrays = SchemaRecord.from_local({"name": "Q", "version": "1", "fields": [
        {"name": "s", "fieldType": {"$type": "local#primitive", "primitive": "str"}, "optional": False}]}).to_record()
    assert "arrayFormatVersions" not in no_arrays["schema"]


def test_schema_round_trip_survives_canonical_key_order():
    published = canonical(SchemaRecord.from_local(IMG).to_record())
    assert list(published["schema"]["properties"]) == ["raw", "tags", "image", "label", "score"]
    back = SchemaRecord.from_record(published, uri=URI)
    local = back.to_local(URI)
    assert local["fields"] == IMG["fields"]  # declaration order and dtype restored
    assert local["$ref"] == URI and local["name"] == "Img" and local["description"] == "Image sample."
    assert back.signature() == SchemaRecord.from_local(IMG).signature()


def test_schema_from_atdata_without_the_hint():
    atdata_style = {
        "$type": "science.alt.dataset.schema", "name": "Img", "version": "1.0.0", "schemaType": "jsonSchema",
        "schema": canonical({
            "$type": "science.alt.dataset.schema#jsonSchemaFormat", "type": "object",
            "properties": {"image": {"$ref": NDARRAY_REF}, "label": {"type": "string"},
                           "score": {"type": "number"}, "n": {"type": ["integer", "null"]}},
            "required": ["label", "image"]}),
        "createdAt": "2026-01-01T00:00:00Z", "atdataSchemaVersion": 1,
    }
    fields = SchemaRecord.from_record(atdata_style, uri=URI).fields
    assert [(f["name"], f["optional"]) for f in fields] == [("label", False), ("image", False), ("n", True),
                                                           ("score", True)]
    assert fields[1]["fieldType"] == {"$type": "local#ndarray", "dtype": "float32"}
    assert fields[2]["fieldType"] == {"$type": "local#primitive", "primitive": "int"}


def test_a_hint_that_disagrees_with_the_schema_is_ignored():
    rec = SchemaRecord.from_local(IMG).to_record()
    rec["schema"]["properties"]["label"] = {"type": "integer"}  # edited after publishing
    fields = {f["name"]: f for f in SchemaRecord.from_record(rec, uri=URI).fields}
    assert fields["label"]["fieldType"] == {"$type": "local#primitive", "primitive": "int"}


def test_nested_schema_body_and_decoding():
    rec = SchemaRecord.from_local(IMG).to_record()
    nested = dict(rec, schema={"schemaBody": {"properties": rec["schema"]["properties"],
                                              "required": rec["schema"]["required"]}})
    del nested["metadata"]
    assert {f["name"] for f in SchemaRecord.from_record(nested, uri=URI).fields} == {f["name"] for f in IMG["fields"]}
    from atdata_dagster.samples.schema import type_from_record

    cls = type_from_record(SchemaRecord.from_record(canonical(rec), uri=URI).to_local(URI))
    assert list(cls.__dataclass_fields__) == ["image", "label", "raw", "tags", "score"]


def test_legacy_schema_record():
    legacy = {"$type": "ac.foundation.dataset.schema", "name": "Old", "version": "1.0.0",
              "fields": [{"name": "x", "fieldType": {"$type": "ac.foundation.dataset.schemaType#array",
                                                     "items": {"$type": "ac.foundation.dataset.schemaType#primitive",
                                                               "primitive": "int"}}, "optional": False}],
              "$atdataSchemaVersion": 1, "createdAt": "2025-01-01T00:00:00Z"}
    rec = SchemaRecord.from_record(legacy, uri=URI)
    assert rec.legacy
    assert rec.to_local()["fields"] == [{"name": "x", "fieldType": {"$type": "local#array", "items": {
        "$type": "local#primitive", "primitive": "int"}}, "optional": False}]
    assert rec.to_record()["schema"]["properties"] == {"x": {"type": "array", "items": {"type": "integer"}}}


def test_schema_errors():
    with pytest.raises(RecordError, match=f"{URI}.*science.alt.dataset.schema"):
        SchemaRecord.from_record({"$type": "science.alt.dataset.entry", "name": "x"}, uri=URI)
    with pytest.raises(SchemaError, match="atdataSchemaVersion=2"):
        SchemaRecord.from_record(dict(SchemaRecord.from_local(IMG).to_record(), atdataSchemaVersion=2), uri=URI)
    with pytest.raises(RecordError, match="neither"):
        SchemaRecord.from_record({"$type": "science.alt.dataset.schema", "name": "x", "version": "1"}, uri=URI)
    with pytest.raises(SchemaError, match="'ref' fields"):
        SchemaRecord.from_local({"name": "R", "version": "1", "fields": [
            {"name": "r", "fieldType": {"$type": "local#ref", "ref": "x"}, "optional": False}]})
    with pytest.raises(SchemaError, match="non-empty list"):
        SchemaRecord.from_local({"name": "E", "version": "1", "fields": []})


# --------------------------------------------------------------------------- entries


def test_entry_with_blob_storage_matches_the_reference_shape():
    sha = hashlib.sha256(b"shard").hexdigest()
    cid = blob_cid(sha)
    entry = EntryRecord(
        name="digits", schema_ref=URI,
        storage=StorageBlobs((BlobShard(BlobRef(cid, "application/x-tar", 5), Checksum.sha256(sha)),)),
        created_at="2026-11-25T20:48:19.891457+00:00", description="d", tags=["a", "b"], license="MIT",
        size=DatasetSize(samples=10, bytes=5, shards=1), metadata={"split": "train", "source_uri": "https://x",
                                                                    "extra": 1},
    )
    rec = entry.to_record()
    assert rec == {
        "$type": "science.alt.dataset.entry", "name": "digits", "schemaRef": URI,
        "storage": {"$type": "science.alt.dataset.storageBlobs", "blobs": [
            {"blob": {"$type": "blob", "ref": {"$link": cid}, "mimeType": "application/x-tar", "size": 5},
             "checksum": {"algorithm": "sha256", "digest": sha}}]},
        "createdAt": "2026-11-25T20:48:19.891457+00:00", "description": "d", "tags": ["a", "b"], "license": "MIT",
        "size": {"samples": 10, "bytes": 5, "shards": 1},
        "metadata": {"split": "train", "sourceUri": "https://x", "custom": {"extra": 1}},
    }
    back = EntryRecord.from_record(canonical(rec), uri="at://x")
    assert back.storage.data_urls(DID) == [f"at://{DID}/blob/{cid}"]
    assert back.storage.checksums(DID) == {f"at://{DID}/blob/{cid}": sha}
    assert back.metadata == {"split": "train", "source_uri": "https://x", "extra": 1}
    assert back.size == DatasetSize(10, 5, 1) and back.tags == ["a", "b"]
    assert cid.startswith("bafkrei")


def test_storage_variants():
    http = StorageHttp((HttpShard("https://h/a.tar", Checksum()),)).to_record()
    assert http == {"$type": "science.alt.dataset.storageHttp",
                    "shards": [{"url": "https://h/a.tar", "checksum": {"algorithm": "none", "digest": ""}}]}
    s3 = StorageS3("b", (S3Shard("p/a.tar", Checksum.sha256("AB" * 32)),), region="eu-west-1",
                   endpoint="https://s3.example").to_record()
    assert s3 == {"$type": "science.alt.dataset.storageS3", "bucket": "b", "region": "eu-west-1",
                  "endpoint": "https://s3.example",
                  "shards": [{"key": "p/a.tar", "checksum": {"algorithm": "sha256", "digest": "ab" * 32}}]}
    assert EntryRecord.from_record({"$type": "science.alt.dataset.entry", "name": "n", "schemaRef": URI,
                                    "storage": s3}).storage.data_urls() == ["s3://b/p/a.tar"]
    ext = EntryRecord.from_record({"$type": "science.alt.dataset.entry", "name": "n", "schemaRef": URI,
                                   "storage": {"$type": "science.alt.dataset.storageExternal",
                                               "urls": ["https://h/{0..2}.tar"]}})
    assert isinstance(ext.storage, StorageExternal) and ext.storage.data_urls() == ["https://h/{0..2}.tar"]
    assert ext.storage.checksums() == {}


def test_legacy_entry_record_with_bare_blobs_and_raw_metadata():
    packed = msgpack.packb({"k": 1.5})
    legacy = {"$type": "ac.foundation.dataset.record", "name": "old", "schemaRef": URI,
              "storage": {"$type": "ac.foundation.dataset.storageBlobs",
                          "blobs": [{"$type": "blob", "ref": {"$link": "bafkreiabc"}, "mimeType": "application/x-tar",
                                     "size": 3}]},
              "metadata": packed}
    rec = EntryRecord.from_record(legacy, uri="at://x/ac.foundation.dataset.record/1")
    assert rec.legacy and rec.metadata == {"k": 1.5}
    assert rec.storage.data_urls(DID) == [f"at://{DID}/blob/bafkreiabc"]


def test_metadata_forms():
    plain = {"split": "train", "processing_steps": ["a"], "lineage": {"run": "r"}}
    enc = encode_metadata(plain)
    assert enc == {"split": "train", "processingSteps": ["a"], "custom": {"lineage": {"run": "r"}}}
    assert decode_metadata(enc) == plain
    # floats are not in the ATProto data model: the whole map goes as msgpack bytes
    with_float = {"split": "train", "accuracy": 0.93}
    enc = encode_metadata(with_float)
    assert set(enc) == {"$bytes"} and decode_metadata(enc) == with_float
    assert decode_metadata({"$bytes": base64.b64encode(msgpack.packb({"a": 1})).decode()}) == {"a": 1}
    assert decode_metadata(msgpack.packb({"a": 2})) == {"a": 2}
    assert encode_metadata({"$type": "x"}).keys() == {"$bytes"}
    assert set(encode_metadata({"big": 2**60})) == {"$bytes"}
    with pytest.raises(RecordError, match="metadata"):
        decode_metadata({"$bytes": base64.b64encode(b"\xc1").decode()})


def test_label_record_shape():
    label = DatasetLabel("mnist", "at://d/science.alt.dataset.entry/1", "2026-01-01T00:00:00+00:00", "1.0", "desc")
    rec = label.to_record()
    assert rec == {"$type": "science.alt.dataset.label", "name": "mnist",
                   "datasetUri": "at://d/science.alt.dataset.entry/1", "createdAt": "2026-01-01T00:00:00+00:00",
                   "version": "1.0", "description": "desc"}
    assert DatasetLabel.from_record(rec) == label
    assert "version" not in DatasetLabel("n", "at://x", "t").to_record()


def test_entry_errors_name_the_uri():
    with pytest.raises(RecordError, match="at://x/y/1.*science.alt.dataset.entry"):
        EntryRecord.from_record({"$type": "science.alt.dataset.label", "name": "x", "datasetUri": "y"}, uri="at://x/y/1")
    with pytest.raises(RecordError, match="at://x/y/2.*com.example.nope"):
        EntryRecord.from_record({"$type": "science.alt.dataset.entry", "name": "x", "schemaRef": URI,
                                 "storage": {"$type": "com.example.nope"}}, uri="at://x/y/2")
    with pytest.raises(RecordError, match="malformed storageS3"):
        EntryRecord.from_record({"$type": "science.alt.dataset.entry", "name": "x", "schemaRef": URI,
                                 "storage": {"$type": "science.alt.dataset.storageS3", "shards": []}}, uri="at://x/y/3")
    with pytest.raises(RecordError, match="science.alt.dataset.label"):
        DatasetLabel.from_record({"$type": "science.alt.dataset.entry"}, uri="at://x/y/4")


# --------------------------------------------------------------------------- refs and sources


def test_refs_and_uris():
    assert parse_dataset_ref("@alice.test/mnist").handle == "alice.test"
    r = parse_dataset_ref("@alice.test/mnist@1.2.0")
    assert (r.handle, r.name, r.version) == ("alice.test", "mnist", "1.2.0")
    r = parse_dataset_ref("@mnist")
    assert (r.handle, r.name, r.version) == (None, "mnist", None)
    r = parse_dataset_ref("atdata://alice.test/datasets/mnist")
    assert (r.handle, r.name) == ("alice.test", "mnist")
    assert str(parse_dataset_ref(f"at://{DID}/science.alt.dataset.entry/3k").uri) == f"at://{DID}/science.alt.dataset.entry/3k"
    with pytest.raises(InvalidRefError):
        parse_dataset_ref("@/x")
    assert AtUri.parse(f"at://{DID}").collection is None
    assert parse_blob_url(f"at://{DID}/blob/bafkreiabc") == (DID, "bafkreiabc")
    with pytest.raises(InvalidRefError):
        parse_blob_url("at://alice.test/blob/bafk")


def test_blob_cid_is_the_raw_sha256_cid():
    # The CID a PDS assigns to an empty blob (CIDv1, raw, sha2-256).
    assert blob_cid(hashlib.sha256(b"").hexdigest()) == "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"


def test_shard_sources_for(tmp_path):
    path = tmp_path / "a.tar"
    path.write_bytes(b"abc")

    class Store:
        bucket, endpoint_url, region_name = "bkt", "http://127.0.0.1:7480", "us-east-1"

    entry = LocalDatasetEntry("n", "atdata://local/schema/T@1", [str(path), "s3://bkt/k/b.tar",
                                                                 "https://h/c.tar", f"at://{DID}/blob/bafkreiabc"],
                              {"checksums": {"s3://bkt/k/b.tar": "ff" * 32}})
    file, s3, http, blob = shard_sources_for(entry, stores=[Store()])
    assert (file.kind, file.path, file.uploads) == ("file", str(path), True)
    measured = file.measured()
    assert measured.size == 3 and measured.sha256 == hashlib.sha256(b"abc").hexdigest()
    assert (s3.kind, s3.bucket, s3.key, s3.endpoint, s3.region, s3.sha256) == (
        "s3", "bkt", "k/b.tar", "http://127.0.0.1:7480", "us-east-1", "ff" * 32)
    assert (http.kind, http.url) == ("http", "https://h/c.tar")
    assert blob.kind == "blob" and blob.uploads
    with pytest.raises(AtmosphereError, match="cannot be published"):
        shard_sources_for(LocalDatasetEntry("n", "r", ["relative/x.tar"]))
    with pytest.raises(AtmosphereError, match="cannot be published"):
        shard_sources_for(LocalDatasetEntry("n", "r", ["/data/x-{0..3}.tar"]))
    # A recorded checksum is trusted here (the upload re-hashes and compares).
    assert ShardSource.file(path, sha256="00" * 32).measured().sha256 == "00" * 32
    assert json.dumps(ShardSource.http("https://h/x").kind) == '"http"'


def test_metadata_with_an_int_beyond_64_bits_is_a_record_error_not_an_overflow():
    # found by test_mutated_pds_records_parse_or_raise_typed (hypothesis): msgpack raised OverflowError
    from atdata_dagster.atmosphere.records import encode_metadata
    from atdata_dagster.errors import RecordError

    with pytest.raises(RecordError, match="cannot be encoded"):
        encode_metadata({"version": 2**64, "blob": b"\x00"})
