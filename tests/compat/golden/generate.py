"""Regenerate the golden artefacts in this directory with the real atdata 0.7.0b1.

Run once, in the atdata venv (Python 3.12), from the repository root::

    bash scripts/install-atdata-venv.sh
    .cache/atdata-venv/bin/python tests/compat/golden/generate.py [--redis-db 15]

Everything written here is *output* of atdata (shards, databases, records, stubs,
manifests); no atdata source or lexicon file is copied. ``tests/compat/test_golden.py``
checks these files on Python 3.11 without atdata. The Redis dump needs a Redis server
on 127.0.0.1:6379 (the given database is flushed); without one the old dump is kept.

Shard URLs are stored **relative** to this directory (``store/...``): atdata indexes a
dataset's URL verbatim when no data store is involved (reference §2.3), so the entries,
their CIDs and checksums stay valid wherever the directory is copied (tests chdir into
a copy).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import warnings
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import wire  # noqa: E402

warnings.simplefilter("ignore")

import atdata  # noqa: E402
from atdata._cid import generate_cid  # noqa: E402
from atdata.index import Index  # noqa: E402
from atdata.index._entry import LocalDatasetEntry  # noqa: E402

N_MAIN = 6  # AllTypes samples in the main shard
N_SHARDED = 4  # Tiny samples over two shards (maxcount=2)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def dump_json(name: str, obj) -> None:
    (HERE / name).parent.mkdir(parents=True, exist_ok=True)
    (HERE / name).write_text(json.dumps(wire.to_json(obj), indent=2, sort_keys=False) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--redis-db", type=int, default=15)
    args = ap.parse_args()

    AllTypes = wire.build_type(wire.SPECS["AllTypes"], atdata.packable, module="golden_types")
    Tiny = wire.build_type(wire.SPECS["Tiny"], atdata.packable, module="golden_types")
    main_values = wire.make_values("AllTypes", N_MAIN)
    tiny_values = wire.make_values("Tiny", N_SHARDED)

    for p in ("store", "stubs", "manifest", "atmosphere"):
        shutil.rmtree(HERE / p, ignore_errors=True)
    for p in ("index.db", "index.db-wal", "index.db-shm"):
        (HERE / p).unlink(missing_ok=True)

    os.chdir(HERE)
    scratch = Path(tempfile.mkdtemp(prefix="golden-"))
    with contextlib.redirect_stdout(sys.stderr):
        # 1. the main shard: written by atdata's own Index.write_samples into a LocalDiskStore
        from atdata.stores import LocalDiskStore

        tmp_idx = Index(provider="sqlite", path=str(scratch / "tmp.db"), data_store=LocalDiskStore(scratch / "store"), atmosphere=None)
        tmp_entry = tmp_idx.write_samples([AllTypes(**v) for v in main_values], name="alltypes")
        src = Path(tmp_entry.data_urls[0])
        main_rel = f"store/alltypes/{src.name}"  # keeps atdata's data--<8hex>--000000.tar name
        (HERE / main_rel).parent.mkdir(parents=True)
        shutil.copyfile(src, HERE / main_rel)
        assert sha256(HERE / main_rel) == tmp_entry.metadata["checksums"][str(src)]

        # 2. a sharded dataset (atdata.write_samples with maxcount), indexed without a store
        sharded_dir = HERE / "store" / "tiny"
        sharded_dir.mkdir(parents=True)
        ds_abs = atdata.write_samples([Tiny(**v) for v in tiny_values], sharded_dir / "part.tar", maxcount=2)
        shard_names = [Path(u).name for u in ds_abs.list_shards()]

        # 3. a manifest written by atdata (single tar: the case atdata gets right)
        (HERE / "manifest").mkdir()
        atdata.write_samples([AllTypes(**v) for v in main_values], HERE / "manifest" / "data.tar", manifest=True)
        (HERE / "manifest" / "data.tar").unlink()  # the manifest is the artefact; the tar would duplicate shard 1

    brace_rel = "store/tiny/part-00000{0,1}.tar"
    assert [f"part-00000{i}.tar" for i in (0, 1)] == shard_names, shard_names

    def fill(idx: Index) -> list[dict]:
        """The same entries, schemas and labels, stored through atdata's provider."""
        ref_all = idx.publish_schema(AllTypes, version="1.0.0")
        main = LocalDatasetEntry(
            name="alltypes", schema_ref=ref_all, data_urls=[main_rel],
            metadata={"checksums": {main_rel: sha256(HERE / main_rel)}, "source": "golden"},
        )
        idx.provider.store_entry(main)
        idx.label("alltypes", main.cid)
        idx.label("alltypes", main.cid, version="1.0.0", description="golden v1")
        # no data store: insert_dataset indexes the dataset URL verbatim (a relative brace list)
        tiny = idx.insert_dataset(atdata.Dataset[Tiny](brace_rel), name="tiny")
        return [
            {"name": e.name, "cid": e.cid, "schema_ref": e.schema_ref, "data_urls": e.data_urls, "metadata": e.metadata}
            for e in (main, tiny)
        ]

    # --- SQLite index.db
    idx = Index(provider="sqlite", path="index.db", atmosphere=None)
    entries = fill(idx)
    labels = [list(x) for x in idx.list_labels()]
    schema_record = idx.get_schema(entries[0]["schema_ref"])
    tiny_record = idx.get_schema(entries[1]["schema_ref"])
    stored_schema_json = idx.provider.get_schema_json("AllTypes", "1.0.0")
    idx.provider.close()
    con = sqlite3.connect("index.db")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.execute("PRAGMA journal_mode=DELETE")  # one self-contained file in git
    con.close()

    # --- Redis key dump
    try:
        import redis

        conn = redis.Redis(host="127.0.0.1", port=6379, db=args.redis_db)
        conn.ping()
        conn.flushdb()
        ridx = Index(redis=conn, atmosphere=None)
        assert fill(ridx) == entries
        dump = {}
        for key in sorted(conn.scan_iter("*")):
            kind = conn.type(key).decode()
            if kind == "hash":
                value = {k.decode(): {"$b64": base64.b64encode(v).decode()} for k, v in sorted(conn.hgetall(key).items())}
            elif kind == "string":
                value = {"$b64": base64.b64encode(conn.get(key)).decode()}
            else:
                raise AssertionError(f"unexpected Redis type {kind} for {key!r}")
            dump[key.decode()] = {"type": kind, "value": value}
        conn.flushdb()
        (HERE / "redis_dump.json").write_text(json.dumps(dump, indent=2, sort_keys=True) + "\n")
    except Exception as exc:  # noqa: BLE001 - Redis unavailable: the old dump is kept, and that is printed
        print(f"redis unavailable ({exc}); keeping the old redis_dump.json", file=sys.stderr)

    # --- stub module atdata generates for the schema
    stub_dir = scratch / "stubs"
    sidx = Index(provider="sqlite", path="index.db", atmosphere=None, stub_dir=str(stub_dir))
    with contextlib.redirect_stdout(sys.stderr), contextlib.redirect_stderr(sys.stdout):
        import_path = sidx.get_import_path(entries[0]["schema_ref"])
        stub_cls = sidx.get_schema_type(entries[0]["schema_ref"], register=False)
    sidx.provider.close()
    stub_files = sorted(str(p.relative_to(stub_dir)) for p in stub_dir.rglob("*.py"))
    (HERE / "stubs").mkdir()
    stub_rel = import_path.replace(".", "/") + ".py"
    shutil.copyfile(stub_dir / stub_rel, HERE / "stubs" / Path(stub_rel).name)
    # the DB stays journal_mode=DELETE after the stub index reopened it in WAL mode
    con = sqlite3.connect("index.db")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.execute("PRAGMA journal_mode=DELETE")
    con.execute("PRAGMA page_size=1024")  # small pages: a smaller file in git; contents unchanged
    con.execute("VACUUM")
    con.close()
    for p in ("index.db-wal", "index.db-shm"):
        Path(p).unlink(missing_ok=True)

    # --- atmosphere records built by atdata's lexicon types (offline)
    from atdata.atmosphere import _lexicon_types as lx
    from atdata.atmosphere.schema import SchemaPublisher

    created = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    schema_lex = SchemaPublisher(None)._build_schema_record(AllTypes, name=None, version="1.0.0", description="Golden schema.", metadata=None)
    schema_lex.created_at = created
    schema_uri = "at://did:plc:abcdefghijklmnopqrstuvwx/science.alt.dataset.schema/3lgolden2aa22"
    ck = lx.ShardChecksum(algorithm="sha256", digest=sha256(HERE / main_rel))
    http_entry = lx.LexDatasetEntry(
        name="alltypes", schema_ref=schema_uri, created_at=created,
        storage=lx.StorageHttp(shards=[lx.HttpShardEntry(url="https://data.example.org/alltypes/" + Path(main_rel).name, checksum=ck)]),
        description="Golden dataset.", tags=["golden", "compat"], license="Apache-2.0",
        size=lx.DatasetSize(samples=N_MAIN, bytes_=(HERE / main_rel).stat().st_size, shards=1),
        metadata=lx.DatasetMetadata.from_dict({"split": "train", "version": "1.0.0", "custom_key": "x"}),
    )
    s3_entry = lx.LexDatasetEntry(
        name="alltypes-s3", schema_ref=schema_uri, created_at=created,
        storage=lx.StorageS3(bucket="golden-bucket", region="us-east-1", endpoint="http://127.0.0.1:9000",
                             shards=[lx.S3ShardEntry(key="alltypes/" + Path(main_rel).name, checksum=ck)]),
    )
    blob_cid = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
    blob_entry = lx.LexDatasetEntry(
        name="alltypes-blobs", schema_ref=schema_uri, created_at=created,
        storage=lx.StorageBlobs(blobs=[lx.BlobEntry.from_record({
            "blob": {"$type": "blob", "ref": {"$link": blob_cid}, "mimeType": "application/x-tar", "size": (HERE / main_rel).stat().st_size},
            "checksum": ck.to_record()})]),
    )
    label = lx.LexLabelRecord(name="alltypes", dataset_uri="at://did:plc:abcdefghijklmnopqrstuvwx/science.alt.dataset.entry/3lgolden2bb33",
                              created_at=created, version="1.0.0", description="golden v1")
    dump_json("atmosphere/schema.json", schema_lex.to_record())
    dump_json("atmosphere/entry_http.json", http_entry.to_record())
    dump_json("atmosphere/entry_s3.json", s3_entry.to_record())
    dump_json("atmosphere/entry_blobs.json", blob_entry.to_record())
    dump_json("atmosphere/label.json", label.to_record())

    # --- CID vectors (libipld through atdata)
    cid_items = [
        (e["schema_ref"], e["data_urls"]) for e in entries
    ] + [
        ("atdata://local/schema/Img@1.0.0", ["/data/digits/data--9b1670a3--000000.tar"]),
        ("atdata://local/schema/MySample@1.0.0", ["s3://bucket/ds/data--0000abcd--000000.tar", "s3://bucket/ds/data--0000abcd--000001.tar"]),
        ("atdata://local/schema/Ünï@2.0.1", ["/d/ünïcødé ✓/data--00000000--000000.tar"]),
        ("atdata://local/schema/Big@1.0.0", [f"/very/long/{'x' * 300}/data--{i:08x}--{i:06d}.tar" for i in range(30)]),
        ("atdata://local/schema/Empty@1.0.0", []),
        ("x" * 70000, ["y" * 300]),  # 4-byte and 2-byte CBOR length heads
    ]
    def compact(text: str):
        # long strings are stored as {"$repeat": [char, n]} to keep golden.json small
        return {"$repeat": [text[0], len(text)]} if len(text) > 1000 and text == text[0] * len(text) else text

    cids = [
        {"schema_ref": compact(r), "data_urls": [compact(x) for x in u], "cid": generate_cid({"schema_ref": r, "data_urls": u})}
        for r, u in cid_items
    ]

    # --- exact sample payloads (msgpack) for byte-level comparison
    payloads = [{"values": v, "packed_hex": AllTypes(**v).packed.hex()} for v in main_values]

    import importlib.metadata as md

    dump_json("golden.json", {
        "generated_by": {"atdata": md.version("atdata"), "webdataset": md.version("webdataset"),
                         "msgpack": md.version("msgpack"), "numpy": md.version("numpy"),
                         "python": sys.version.split()[0]},
        "entries": entries,
        "labels": labels,
        "main_values": main_values,
        "tiny_values": tiny_values,
        "schema_record": schema_record,
        "tiny_schema_record": tiny_record,
        "stored_schema_json": stored_schema_json,
        "stub": {"import_path": import_path, "files": stub_files, "file": "stubs/" + Path(stub_rel).name,
                 "class": stub_cls.__name__, "fields": [f.name for f in dataclasses.fields(stub_cls)]},
        "manifest": {"json": "manifest/data.manifest.json", "parquet": "manifest/data.manifest.parquet"},
        "cids": cids,
        "payloads": payloads,
    })
    shutil.rmtree(scratch, ignore_errors=True)
    total = sum(p.stat().st_size for p in HERE.rglob("*") if p.is_file())
    print(f"golden artefacts regenerated in {HERE} ({total} bytes)")


if __name__ == "__main__":
    main()
