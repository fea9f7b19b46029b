"""The atdata side of the compat suite: run by the atdata venv's Python 3.12, never by pytest.

Reads one JSON request per line on stdin, answers one JSON line on stdout
(``{"ok": true, "result": ...}`` or ``{"ok": false, "error": ..., "traceback": ...}``).
Everything here uses only the public behaviour of the real ``atdata`` library; it never
imports ``atdata_dagster`` (which is not even installed in that venv), so a passing
interop test cannot be our code reading our own bytes.

Values cross the boundary in the tagged JSON form of ``wire.py``; shards, databases and
stub files cross it as paths.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import sys
import tempfile
import traceback
import typing
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import wire  # noqa: E402  (same directory; stdlib + numpy only)

warnings.simplefilter("ignore")


import atdata  # noqa: E402
from atdata._helpers import bytes_to_array  # noqa: E402
from atdata.index import Index  # noqa: E402
from atdata.stores import LocalDiskStore  # noqa: E402

_TYPES: dict[str, type] = {}


def sample_type(name: str) -> type:
    """The atdata ``@packable`` class for a ``wire.SPECS`` entry (built once)."""
    if name not in _TYPES:
        _TYPES[name] = wire.build_type(wire.SPECS[name], atdata.packable, module="atdata_side_types")
    return _TYPES[name]


# ------------------------------------------------------------------ index setup


def open_index(
    spec: dict[str, Any], *, store_root: str | None = None, stub_dir: str | None = None, s3: dict[str, Any] | None = None
) -> Index:
    kind = spec["kind"]
    if s3 is not None:
        from atdata.stores import S3DataStore

        store: Any = S3DataStore(dict(s3["credentials"]), bucket=s3["bucket"])
    else:
        store = LocalDiskStore(store_root) if store_root else None
    common: dict[str, Any] = {"data_store": store, "atmosphere": None}
    if stub_dir is not None:
        common["stub_dir"] = stub_dir
    if kind == "sqlite":
        # provider="sqlite" is required: atdata ignores path= without it (reference §5.1)
        return Index(provider="sqlite", path=spec["path"], **common)
    if kind == "postgres":
        return Index(provider="postgres", dsn=spec["dsn"], **common)
    if kind == "redis":
        import redis

        return Index(redis=redis.Redis.from_url(spec["url"]), **common)
    raise ValueError(f"unknown provider kind {kind!r}")


def entry_json(entry: Any) -> dict[str, Any]:
    return {
        "name": entry.name,
        "cid": entry.cid,
        "schema_ref": entry.schema_ref,
        "data_urls": list(entry.data_urls),
        "metadata": entry.metadata,
    }


# ----------------------------------------------------------------------- reading


def sample_fields(sample: Any, nd_fields: set[str]) -> tuple[dict[str, Any], list[str]]:
    """A read sample as a field dict; ndarray fields atdata left as bytes are decoded.

    atdata 0.7 only turns bytes back into arrays for fields annotated exactly
    ``NDArray`` or ``NDArray | None`` (reference §1.4); the names of the fields it
    left as bytes are returned so tests can document the quirk.
    """
    out: dict[str, Any] = {}
    left_as_bytes: list[str] = []
    for f in dataclasses.fields(sample):
        v = getattr(sample, f.name)
        if f.name in nd_fields and isinstance(v, (bytes, bytearray)):
            left_as_bytes.append(f.name)
            v = bytes_to_array(bytes(v))
        out[f.name] = v
    return out, left_as_bytes


def ndarray_fields_of(record: dict[str, Any]) -> set[str]:
    out = set()
    for f in record.get("fields", []):
        ft = f["fieldType"]
        kind = ft.get("$type", ft.get("kind", "")).rsplit("#", 1)[-1]
        if kind in ("ndarray", "structured"):
            out.add(f["name"])
    return out


def read_dataset_as(cls: type, data_urls: list[str], nd_fields: set[str]) -> dict[str, Any]:
    from atdata._hf_api import _shards_to_wds_url

    url = _shards_to_wds_url(list(data_urls)) if len(data_urls) > 1 else data_urls[0]
    ds = atdata.Dataset[cls](url)
    samples, quirk = [], set()
    for s in ds.ordered():
        d, lb = sample_fields(s, nd_fields)
        samples.append(d)
        quirk.update(lb)
    return {"samples": samples, "left_as_bytes": sorted(quirk), "class_name": cls.__name__}


def op_read(req: dict[str, Any]) -> dict[str, Any]:
    """List, resolve by name, decode the schema, read every sample and verify checksums."""
    idx = open_index(req["provider"], store_root=req.get("store_root"), s3=req.get("s3"))
    listed = [entry_json(e) for e in idx.list_datasets()]
    entry = idx.get_dataset(req["name"])
    schema = idx.get_schema(entry.schema_ref)
    cls = idx.get_schema_type(entry.schema_ref)
    nd = ndarray_fields_of(schema)
    # the entry through atdata's high-level loader (label resolution; S3Source with the
    # store's credentials for s3:// URLs, a brace-list URLSource otherwise)
    loaded = atdata.load_dataset(f"@local/{req['name']}", cls, split="train", index=idx)
    loaded_count = None
    if req.get("s3") is not None:
        samples, quirk = [], set()
        for smp in loaded.ordered():
            d, lb = sample_fields(smp, nd)
            samples.append(d)
            quirk.update(lb)
        read = {"samples": samples, "left_as_bytes": sorted(quirk), "class_name": cls.__name__}
    else:
        read = read_dataset_as(cls, entry.data_urls, nd)
        loaded_count = sum(1 for _ in loaded.ordered())
    out = {
        "listed": listed,
        "entry": entry_json(entry),
        "schema": schema,
        "decoded_fields": [[f.name, repr(f.type)] for f in dataclasses.fields(cls)],
        "labels": [list(x) for x in idx.list_labels()],
        "verify": atdata.verify_checksums(entry),
        "cid_recomputed": atdata._cid.generate_cid({"schema_ref": entry.schema_ref, "data_urls": list(entry.data_urls)}),
        "load_dataset_count": loaded_count,
        **read,
    }
    if req.get("as_type") and req.get("s3") is None:
        out["as_type"] = read_dataset_as(sample_type(req["as_type"]), entry.data_urls, wire.ndarray_fields(wire.SPECS[req["as_type"]]))
    idx.provider.close()
    return out


def op_read_urls(req: dict[str, Any]) -> dict[str, Any]:
    """Read shard URLs directly with a wire type (or a schema record)."""
    if "record" in req:
        from atdata._schema_codec import schema_to_type

        cls = schema_to_type(req["record"])
        nd = ndarray_fields_of(req["record"])
    else:
        cls = sample_type(req["type"])
        nd = wire.ndarray_fields(wire.SPECS[req["type"]])
    return read_dataset_as(cls, req["urls"], nd)


# ----------------------------------------------------------------------- writing


def op_write(req: dict[str, Any]) -> dict[str, Any]:
    """Write samples the way atdata writes them and index them.

    modes: ``index`` = ``Index.write_samples`` (one final shard in the store);
    ``store_sharded`` = ``LocalDiskStore.write_shards(maxcount=...)`` + entry/label/schema
    as ``insert_dataset`` stores them; ``brace`` = ``write_samples(maxcount=...)`` then
    ``insert_dataset`` with no store (the entry holds one brace-pattern URL).
    """
    cls = sample_type(req["type"])
    samples = [cls(**v) for v in req["samples"]]
    idx = open_index(req["provider"], store_root=req.get("store_root"), s3=req.get("s3"))
    mode = req.get("mode", "index")
    name = req["name"]
    if mode == "index":
        with contextlib.redirect_stdout(sys.stderr):
            entry = idx.write_samples(samples, name=name, maxcount=req.get("maxcount", 10_000), metadata=req.get("metadata"))
    elif mode == "store_sharded":
        from atdata.index._entry import LocalDatasetEntry

        tmp = tempfile.mkdtemp(prefix="atdata-side-")
        with contextlib.redirect_stdout(sys.stderr):
            ds = atdata.write_samples(samples, Path(tmp) / "data.tar")
            urls = idx.data_store.write_shards(ds, prefix=name, maxcount=req["maxcount"])
        ref = idx.publish_schema(cls, version="1.0.0")
        meta = dict(req.get("metadata") or {})
        meta["checksums"] = dict(urls.checksums)
        entry = LocalDatasetEntry(name=name, schema_ref=ref, data_urls=list(urls), metadata=meta)
        idx.provider.store_entry(entry)
        idx.label(name, entry.cid)
    elif mode == "brace":
        out_dir = Path(req["out_dir"])
        out_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.redirect_stdout(sys.stderr):
            ds = atdata.write_samples(samples, out_dir / "part.tar", maxcount=req["maxcount"])
        plain = Index(provider=idx.provider, atmosphere=None)
        entry = plain.insert_dataset(ds, name=name, metadata=req.get("metadata"))
    else:
        raise ValueError(f"unknown write mode {mode!r}")
    out = entry_json(entry)
    idx.provider.close()
    return out


def op_write_tar(req: dict[str, Any]) -> dict[str, Any]:
    """``atdata.write_samples`` to a path (no index); returns the shard paths."""
    cls = sample_type(req["type"])
    samples = [cls(**v) for v in req["samples"]]
    kw = {k: req[k] for k in ("maxcount", "manifest") if k in req}
    with contextlib.redirect_stdout(sys.stderr):
        ds = atdata.write_samples(samples, req["path"], **kw)
    return {"url": ds.url, "shards": ds.list_shards()}


def op_label(req: dict[str, Any]) -> dict[str, Any]:
    idx = open_index(req["provider"])
    idx.label(req["name"], req["cid"], version=req.get("version"), description=req.get("description"))
    got = idx.get_label(req["name"], req.get("version"))
    idx.provider.close()
    return entry_json(got)


def op_resolve(req: dict[str, Any]) -> dict[str, Any]:
    """What atdata resolves a name to: ``get_label(name, version)`` and ``get_dataset(name)``."""
    idx = open_index(req["provider"])
    out = {"label": entry_json(idx.get_label(req["name"], req.get("version"))), "dataset": entry_json(idx.get_dataset(req["name"]))}
    idx.provider.close()
    return out


# ----------------------------------------------------------------------- schemas


def op_schema(req: dict[str, Any]) -> dict[str, Any]:
    """atdata's local schema record (as stored and as read), stub module and atmosphere record."""
    cls = sample_type(req["type"])
    work = Path(req["work_dir"])
    stub_dir = work / "stubs"
    idx = Index(provider="sqlite", path=str(work / "schema.db"), atmosphere=None, stub_dir=str(stub_dir))
    with contextlib.redirect_stdout(sys.stderr), contextlib.redirect_stderr(io.StringIO()):
        ref = idx.publish_schema(cls, version=req.get("version", "1.0.0"), description=req.get("description"))
        record = idx.get_schema(ref)
        stored = idx.provider.get_schema_json(record["name"], record["version"])
        import_path = idx.get_import_path(ref)
        stub_cls = idx.get_schema_type(ref, register=False)
    files = sorted(str(p.relative_to(stub_dir)) for p in stub_dir.rglob("*.py"))
    stub_file = stub_dir / (import_path.replace(".", "/") + ".py")
    return {
        "ref": ref,
        "record": record,
        "stored_json": stored,
        "import_path": import_path,
        "stub_files": files,
        "stub_source": stub_file.read_text(),
        "stub_class": {"name": stub_cls.__name__, "fields": [f.name for f in dataclasses.fields(stub_cls)]},
        "atmosphere_record": _atmo_schema_record(cls, req.get("version", "1.0.0"), req.get("description")),
    }


def _atmo_schema_record(cls: type, version: str, description: str | None) -> dict[str, Any]:
    from atdata.atmosphere.schema import SchemaPublisher

    # the record builder needs no client; publishing is not exercised here
    lex = SchemaPublisher(None)._build_schema_record(cls, name=None, version=version, description=description, metadata=None)
    return lex.to_record()


def op_decode_record(req: dict[str, Any]) -> dict[str, Any]:
    """A schema record (local or atmosphere shape) through atdata's decoder."""
    from atdata._schema_codec import schema_to_type

    cls = schema_to_type(req["record"])
    hints = typing.get_type_hints(cls)
    return {
        "name": cls.__name__,
        "fields": [
            {"name": f.name, "type": repr(hints.get(f.name, f.type)), "optional": f.default is None}
            for f in dataclasses.fields(cls)
        ],
    }


def op_stubs(req: dict[str, Any]) -> dict[str, Any]:
    """Stub generation for a schema already stored in an index."""
    idx = open_index(req["provider"], stub_dir=req["stub_dir"])
    with contextlib.redirect_stdout(sys.stderr):
        import_path = idx.get_import_path(req["ref"])
        cls = idx.get_schema_type(req["ref"], register=False)
    stub_dir = Path(req["stub_dir"])
    return {
        "import_path": import_path,
        "stub_files": sorted(str(p.relative_to(stub_dir)) for p in stub_dir.rglob("*.py")),
        "class_name": cls.__name__,
        "fields": [f.name for f in dataclasses.fields(cls)],
    }


# --------------------------------------------------------------------- manifests


def op_read_manifest(req: dict[str, Any]) -> dict[str, Any]:
    from atdata.manifest import ShardManifest

    json_path = req["json_path"]
    parquet_path = req.get("parquet_path")
    if parquet_path and os.path.exists(parquet_path):
        m = ShardManifest.from_files(json_path, parquet_path)
        rows = json.loads(m.samples.to_json(orient="records"))
        columns = list(m.samples.columns)
    else:
        m = ShardManifest.from_json_only(json_path)
        rows, columns = None, None
    return {
        "header": json.loads(json.dumps(m.header_dict(), default=str)),
        "shard_id": m.shard_id,
        "num_samples": m.num_samples,
        "parquet_columns": columns,
        "parquet_rows": rows,
    }


# -------------------------------------------------------------------- atmosphere


def op_parse_atmo(req: dict[str, Any]) -> dict[str, Any]:
    """Our atmosphere records through atdata's lexicon parsers (offline)."""
    from atdata.atmosphere import _lexicon_types as lx

    out: dict[str, Any] = {}
    if "schema" in req:
        rec = lx.LexSchemaRecord.from_record(req["schema"])
        out["schema"] = {
            "name": rec.name,
            "version": rec.version,
            "schema_type": rec.schema_type,
            "atdata_schema_version": rec.atdata_schema_version,
            "properties": rec.schema.schema_body.get("properties"),
            "required": rec.schema.schema_body.get("required"),
            "array_format_versions": rec.schema.array_format_versions,
            "roundtrip": rec.to_record() == req["schema"],
        }
        out["schema_type_fields"] = op_decode_record({"record": req["schema"]})["fields"]
    if "entry" in req:
        rec = lx.LexDatasetEntry.from_record(req["entry"])
        st = rec.storage
        storage: dict[str, Any] = {"class": type(st).__name__}
        if isinstance(st, lx.StorageHttp):
            storage["urls"] = [s.url for s in st.shards]
            storage["checksums"] = [s.checksum.to_record() for s in st.shards]
        elif isinstance(st, lx.StorageS3):
            storage.update(bucket=st.bucket, region=st.region, endpoint=st.endpoint, keys=[s.key for s in st.shards])
        elif isinstance(st, lx.StorageBlobs):
            storage["blobs"] = [b.to_record() for b in st.blobs]
        out["entry"] = {
            "name": rec.name,
            "schema_ref": rec.schema_ref,
            "storage": storage,
            "description": rec.description,
            "tags": rec.tags,
            "license": rec.license,
            "size": rec.size.to_record() if rec.size else None,
            "metadata": rec.metadata.to_dict() if rec.metadata else None,
            "roundtrip": rec.to_record() == req["entry"],
        }
    if "label" in req:
        rec = lx.LexLabelRecord.from_record(req["label"])
        out["label"] = {"name": rec.name, "dataset_uri": rec.dataset_uri, "version": rec.version,
                        "description": rec.description, "roundtrip": rec.to_record() == req["label"]}
    return out


def op_build_atmo(req: dict[str, Any]) -> dict[str, Any]:
    """atdata-built atmosphere records for us to parse."""
    from datetime import datetime, timezone

    from atdata.atmosphere import _lexicon_types as lx

    cls = sample_type(req["type"])
    created = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    schema = _atmo_schema_record(cls, "1.0.0", "Built by atdata.")
    schema["createdAt"] = created.isoformat()
    ck = lx.ShardChecksum(algorithm="sha256", digest="ab" * 32)
    schema_uri = "at://did:plc:abcdefghijklmnopqrstuvwx/science.alt.dataset.schema/3kabc"
    entries = {
        "http": lx.LexDatasetEntry(
            name="digits", schema_ref=schema_uri, created_at=created,
            storage=lx.StorageHttp(shards=[lx.HttpShardEntry(url=u, checksum=ck) for u in req["http_urls"]]),
            description="d", tags=["a", "b"], license="MIT",
            size=lx.DatasetSize(samples=10, bytes_=1234, shards=len(req["http_urls"])),
            metadata=lx.DatasetMetadata.from_dict({"split": "train", "version": "1", "extra_key": 5}),
        ),
        "s3": lx.LexDatasetEntry(
            name="digits-s3", schema_ref=schema_uri, created_at=created,
            storage=lx.StorageS3(bucket="bkt", region="us-east-1", endpoint="http://127.0.0.1:9000",
                                 shards=[lx.S3ShardEntry(key=k, checksum=ck) for k in req["s3_keys"]]),
        ),
        "blobs": lx.LexDatasetEntry(
            name="digits-blobs", schema_ref=schema_uri, created_at=created,
            storage=lx.StorageBlobs(blobs=[lx.BlobEntry.from_record(
                {"blob": {"$type": "blob", "ref": {"$link": c}, "mimeType": "application/x-tar", "size": 2048},
                 "checksum": ck.to_record()}) for c in req["blob_cids"]]),
        ),
    }
    label = lx.LexLabelRecord(name="digits", dataset_uri="at://did:plc:abcdefghijklmnopqrstuvwx/science.alt.dataset.entry/3kdef",
                              created_at=created, version="1.0.0", description="first")
    return {"schema": schema, "entries": {k: v.to_record() for k, v in entries.items()}, "label": label.to_record()}


# ------------------------------------------------------------------------- misc


def op_cid(req: dict[str, Any]) -> list[str]:
    from atdata._cid import generate_cid

    return [generate_cid({"schema_ref": ref, "data_urls": urls}) for ref, urls in req["items"]]


def op_load_splits(req: dict[str, Any]) -> Any:
    """What atdata's ``load_dataset`` gives: {split: shard URLs}, or {"error": type, "message": ...}."""
    kwargs = {k: req[k] for k in ("split", "data_files") if req.get(k) is not None}
    try:
        got = atdata.load_dataset(req["path"], sample_type("Tiny"), **kwargs)
    except Exception as e:  # noqa: BLE001 - the exception type is the answer
        return {"error": type(e).__name__, "message": str(e)}
    if isinstance(got, dict):
        return {"splits": {k: v.list_shards() for k, v in got.items()}}
    return {"dataset": got.list_shards()}


def op_read_error(req: dict[str, Any]) -> dict[str, Any]:
    """Read a shard with atdata; the exception's class (module, name), or the sample count."""
    try:
        n = sum(1 for _ in atdata.Dataset[sample_type(req["type"])](req["url"]).ordered())
    except Exception as e:  # noqa: BLE001 - the exception type is the answer
        return {"module": type(e).__module__, "name": type(e).__qualname__}
    return {"samples": n}


def op_lenses(req: dict[str, Any]) -> dict[str, Any]:
    """What atdata lists and finds in a lenses table written by someone else."""
    idx = open_index(req["provider"])
    try:
        return {
            "all": sorted(r["$ref"] for r in idx.list_lenses()),
            "found": sorted(r["$ref"] for r in idx.find_lenses(req["source"], req.get("view"))),
            "record": idx.get_lens(req["ref"]),
        }
    finally:
        idx.provider.close()


def op_query(req: dict[str, Any]) -> list[list[Any]]:
    """atdata's QueryExecutor over the manifests next to these shards: [shard, key, offset] per match."""
    from atdata.manifest import QueryExecutor

    field, threshold = req["field"], req["threshold"]
    hits = QueryExecutor.from_shard_urls(req["urls"]).query(where=lambda df: df[field] > threshold)
    return [[h.shard, h.key, h.offset] for h in hits]


def op_conveniences(req: dict[str, Any]) -> dict[str, Any]:
    """atdata's Dataset conveniences on a NoDoc dataset (see ``wire.conveniences``)."""
    return wire.conveniences(atdata.Dataset[sample_type("NoDoc")](req["url"]), _keys(req["url"])[0])


def _keys(url: str) -> list[str]:
    import webdataset as wds

    return [s["__key__"] for s in wds.WebDataset(url, shardshuffle=False, empty_check=False)]


def op_generate_cid(req: dict[str, Any]) -> list[Any]:
    """atdata's ``generate_cid`` of each value: the CID, or ``{"error": <exception type>}``."""
    from atdata._cid import generate_cid

    out: list[Any] = []
    for value in req["values"]:
        try:
            out.append(generate_cid(value))
        except Exception as e:  # noqa: BLE001 - the exception type is the answer
            out.append({"error": type(e).__name__})
    return out


def op_encode(req: dict[str, Any]) -> dict[str, Any]:
    """The exact msgpack payload atdata writes for one sample (hex)."""
    cls = sample_type(req["type"])
    return {"packed_hex": cls(**req["values"]).packed.hex()}


def op_ping(req: dict[str, Any]) -> dict[str, Any]:
    import importlib.metadata as md

    return {"atdata": md.version("atdata"), "python": sys.version.split()[0], "webdataset": md.version("webdataset")}


OPS = {name[3:]: fn for name, fn in globals().items() if name.startswith("op_")}


def handle(line: str) -> dict[str, Any]:
    try:
        req = wire.loads(line)
        return {"ok": True, "result": OPS[req.pop("op")](req)}
    except Exception as exc:  # noqa: BLE001 - reported to the test over the wire; the server keeps serving
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}


def main() -> None:
    out = sys.stdout
    sys.stdout = sys.stderr  # libraries print progress (webdataset "# writing ..."); keep stdout for answers
    for line in sys.stdin:
        if not line.strip():
            continue
        answer = handle(line)
        out.write(json.dumps(wire.to_json(answer), default=str) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
