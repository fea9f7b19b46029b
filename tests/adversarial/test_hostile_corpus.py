"""The hostile-input corpus: every bad input a stranger can hand us, and the typed error it gives.

This table is the single list of the threat surface (SECURITY.md describes the trust
model). Each case feeds one hostile input through the public entry point a user would
hit: reading a shard with ``Dataset`` (tar framing, msgpack payloads, ndarray bytes),
``Index.write`` / ``Index.get_dataset`` / ``Index.get_schema`` / ``Index.decode_schema``
(names, refs, index rows written by other tools), the schema and stub functions
(``type_from_record``, ``StubManager``), the Dagster naming rule (``dataset_name``) and the
ATProto record parsers (``SchemaRecord``/``EntryRecord``/``DatasetLabel.from_record``).

Each case must raise its typed error (a subclass of ``AtdataError``) with a message
fragment that says what was wrong, within ``TIMEOUT`` seconds (a hang fails the case,
it does not block the run) and allocating less than ``MAX_PEAK`` bytes (a huge declared
length must be refused before anything is allocated). An exception that is not ours,
also one hidden as the ``__cause__`` of ours, is a crash and fails the case.
"""

from __future__ import annotations

import gzip
import io
import json
import pickle
import re
import signal
import sqlite3
import struct
import tarfile
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import dagster as dg
import msgpack
import numpy as np
import pytest
from numpy.typing import NDArray

from atdata_dagster import local
from atdata_dagster.atmosphere import AtUri, DatasetLabel, EntryRecord, ResolvedDataset, SchemaRecord
from atdata_dagster.dataset import Dataset
from atdata_dagster.errors import (
    AtdataError,
    ConfigurationError,
    ConfigurationTypeError,
    DecodeError,
    FieldMismatchError,
    InvalidNameError,
    InvalidRefError,
    ProviderError,
    RecordError,
    SchemaError,
    ShardError,
    StoreError,
)
from atdata_dagster.index.entry import LocalDatasetEntry
from atdata_dagster.io_manager import asset_settings, dataset_name, parse_dataset_name
from atdata_dagster.samples import DictSample, packable
from atdata_dagster.samples.codec import encode_ndarray
from atdata_dagster.samples.schema import type_from_record
from atdata_dagster.samples.stubs import StubManager
from atdata_dagster.shards.manifest import read_manifest
from atdata_dagster.stores.disk import LocalDiskStore

#: seconds one case may take before it counts as a hang
TIMEOUT = 10
#: bytes one case may allocate at its peak (inputs are a few KiB; lengths claim GiB)
MAX_PEAK = 64 << 20

MARKER = "PWNED"  # a file a hostile payload would create if any of it were executed


@packable
class Row:
    label: str
    v: NDArray


@packable
class Prims:
    s: str
    i: int
    f: float
    b: bool
    raw: bytes
    xs: list[int]


GOOD_V = encode_ndarray(np.arange(3, dtype="<i4"))


# --------------------------------------------------------------------------- tar builders


def tar_bytes(members: list[tarfile.TarInfo | tuple[str, bytes]], fmt: int = tarfile.GNU_FORMAT,
              pax: dict[str, str] | None = None) -> bytes:
    """A tar written by the stdlib: (name, data) regular files, or prepared TarInfo entries."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, pax_headers=pax or {}) as tf:
        for m in members:
            if isinstance(m, tarfile.TarInfo):
                tf.addfile(m)
            else:
                info = tarfile.TarInfo(m[0])
                info.size = len(m[1])
                tf.addfile(info, io.BytesIO(m[1]))
    return buf.getvalue()


def special(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 1, 3
    return info


def payload(**fields: Any) -> bytes:
    return msgpack.packb(fields, use_bin_type=True)


def good_payload(i: int = 0) -> bytes:
    return payload(label=f"s{i}", v=GOOD_V)


VALID = tar_bytes([("000000.msgpack", good_payload(0)), ("000001.msgpack", good_payload(1))])


def with_checksum(header: bytearray) -> bytearray:
    """Recompute a ustar header's checksum after tampering with it."""
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    return header


def tampered_header(data: bytes = VALID, **fields: bytes) -> bytes:
    """VALID with fields of its first header replaced (and a correct checksum)."""
    out = bytearray(data)
    header = bytearray(out[:512])
    spans = {"name": (0, 100), "size": (124, 136), "typeflag": (156, 157)}
    for key, value in fields.items():
        lo, hi = spans[key]
        header[lo:hi] = value.ljust(hi - lo, b"\0")[: hi - lo]
    out[:512] = with_checksum(header)
    return bytes(out)


def pax_tar(records: dict[str, str] | list[bytes], data: bytes = b"\x80") -> bytes:
    """One pax 'x' header (given records, or raw record lines) followed by a regular member."""
    if isinstance(records, dict):
        lines = []
        for k, v in records.items():
            rec = f" {k}={v}\n".encode()
            n = len(rec) + len(str(len(rec)))
            n = len(rec) + len(str(n))  # the length counts its own digits
            lines.append(str(n).encode() + rec)
        raw = b"".join(lines)
    else:
        raw = b"".join(records)
    xhdr = tarfile.TarInfo("././@PaxHeader")
    xhdr.type = tarfile.XHDTYPE
    xhdr.size = len(raw)
    member = tarfile.TarInfo("000000.msgpack")
    member.size = len(data)
    out = io.BytesIO()
    out.write(xhdr.tobuf(tarfile.USTAR_FORMAT))
    out.write(raw + bytes(-len(raw) % 512))
    out.write(member.tobuf(tarfile.USTAR_FORMAT))
    out.write(data + bytes(-len(data) % 512))
    out.write(bytes(1024))
    return out.getvalue()


def pax_records(records: dict[str, str]) -> bytes:
    lines = []
    for k, v in records.items():
        rec = f" {k}={v}\n".encode()
        n = len(rec) + len(str(len(rec)))
        n = len(rec) + len(str(n))  # the length counts its own digits
        lines.append(str(n).encode() + rec)
    return b"".join(lines)


def global_pax_tar(count: int, records: dict[str, str] | None = None, per_header=None) -> bytes:
    """``count`` global ('g') pax headers (``per_header(i)`` gives header i's records), then one sample."""
    out = io.BytesIO()
    for i in range(count):
        raw = pax_records(per_header(i) if per_header is not None else records or {})
        ghdr = tarfile.TarInfo("././@PaxGlobalHeader")
        ghdr.type = tarfile.XGLTYPE
        ghdr.size = len(raw)
        out.write(ghdr.tobuf(tarfile.USTAR_FORMAT))
        out.write(raw + bytes(-len(raw) % 512))
    data = good_payload()
    member = tarfile.TarInfo("000000.msgpack")
    member.size = len(data)
    out.write(member.tobuf(tarfile.USTAR_FORMAT))
    out.write(data + bytes(-len(data) % 512))
    out.write(bytes(1024))
    return out.getvalue()


def gnu_longname_tar(name: bytes) -> bytes:
    longhdr = tarfile.TarInfo("././@LongLink")
    longhdr.type = tarfile.GNUTYPE_LONGNAME
    longhdr.size = len(name) + 1
    member = tarfile.TarInfo("placeholder.msgpack")
    data = good_payload()
    member.size = len(data)
    out = io.BytesIO()
    out.write(longhdr.tobuf(tarfile.GNU_FORMAT))
    out.write(name + b"\0" + bytes(-(len(name) + 1) % 512))
    out.write(member.tobuf(tarfile.GNU_FORMAT))
    out.write(data + bytes(-len(data) % 512))
    out.write(bytes(1024))
    return out.getvalue()


# --------------------------------------------------------------------------- ndarray builders


def compact(dtype: bytes, shape: tuple[int, ...], data: bytes = b"") -> bytes:
    """atdata's compact ndarray layout with whatever header the attacker likes."""
    return bytes([len(dtype)]) + dtype + bytes([len(shape)]) + struct.pack(f"<{len(shape)}q", *shape) + data


def npy(header: str, data: bytes = b"") -> bytes:
    raw = header.encode("latin1")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(raw)) + raw + data


# --------------------------------------------------------------------------- entry points


def read_shard(data: bytes, tmp: Path, sample_type: type = Row) -> list:
    """Write ``data`` as a shard file and read every sample with Dataset[sample_type]."""
    path = tmp / "hostile.tar"
    path.write_bytes(data)
    return list(Dataset[sample_type](str(path)).ordered())


def read_manifest_file(data: bytes, tmp: Path) -> dict:
    """A shard's manifest sidecar as found in a store, read through the shard's URL."""
    (tmp / "data--00000000--000000.manifest.json").write_bytes(data)
    return read_manifest(str(tmp / "data--00000000--000000.tar"))


def read_payload(data: bytes, tmp: Path, sample_type: type = Row) -> list:
    """A well-formed shard whose one sample has the hostile msgpack payload ``data``."""
    return read_shard(tar_bytes([("000000.msgpack", data)]), tmp, sample_type)


def read_array(arr_bytes: bytes, tmp: Path) -> list:
    """A well-formed shard and payload whose ndarray field holds the hostile bytes."""
    return read_payload(payload(label="x", v=arr_bytes), tmp)


def new_index(tmp: Path) -> local.Index:
    return local.Index(path=str(tmp / "index.db"), data_store=LocalDiskStore(str(tmp / "data")), atmosphere=None)


def write_named(name: Any, tmp: Path) -> Any:
    return new_index(tmp).write_samples([Row(label="a", v=np.zeros(2))], name=name)


def get_named(ref: Any, tmp: Path) -> Any:
    return new_index(tmp).get_dataset(ref)


def raw_index_row(tmp: Path, *, data_urls: bytes, metadata: bytes | None = None) -> Any:
    """An entry row as another tool could have written it, then read back by name."""
    index = new_index(tmp)
    index.write_samples([Row(label="a", v=np.zeros(2))], name="seed")
    con = sqlite3.connect(tmp / "index.db")
    con.execute(
        "INSERT INTO dataset_entries (cid, name, schema_ref, data_urls, metadata) VALUES (?,?,?,?,?)",
        ("bafyhostile", "hostile", "atdata://local/schema/Row@1.0.0", data_urls, metadata),
    )
    con.commit()
    con.close()
    return index.get_dataset("hostile")


def raw_schema_row(tmp: Path, text: str) -> Any:
    """A schema row as another tool could have written it, then decoded into a type."""
    index = new_index(tmp)
    con = sqlite3.connect(tmp / "index.db")
    con.execute("INSERT INTO schemas (name, version, schema_json) VALUES (?,?,?)", ("Hostile", "1.0.0", text))
    con.commit()
    con.close()
    return index.get_schema_type("atdata://local/schema/Hostile@1.0.0")


def local_record(fields: list[dict] | None = None, **top: Any) -> dict:
    record = {
        "name": "Ok",
        "version": "1.0.0",
        "fields": fields
        if fields is not None
        else [{"name": "x", "fieldType": {"$type": "local#primitive", "primitive": "int"}, "optional": False}],
    }
    record.update(top)
    return record


def prim(name: Any, primitive: str = "int") -> dict:
    return {"name": name, "fieldType": {"$type": "local#primitive", "primitive": primitive}, "optional": False}


def stub_load(record: dict, tmp: Path, authority: str = "local") -> Any:
    """Generate and import a stub module (what ``Index(auto_stubs=True)`` does)."""
    return StubManager(tmp / "stubs").load_type(record, authority=authority)


def nested_list(depth: int) -> dict:
    ft: dict = {"$type": "local#primitive", "primitive": "int"}
    for _ in range(depth):
        ft = {"$type": "local#array", "items": ft}
    return ft


ENTRY = {
    "$type": "science.alt.dataset.entry",
    "name": "x",
    "schemaRef": "at://did:plc:abc/science.alt.dataset.schema/1",
    "createdAt": "2026-01-01T00:00:00Z",
}


def entry_with_storage(storage: Any) -> EntryRecord:
    return EntryRecord.from_record(dict(ENTRY, storage=storage), uri="at://did:plc:abc/science.alt.dataset.entry/3k")


def foreign_entry_read(data_url: str, tmp: Path) -> Any:
    """Read an entry resolved from a (hostile) atmosphere record through a user's Index, whatever it names."""
    entry = ResolvedDataset(name="bait", schema_ref="at://did:plc:abc/science.alt.dataset.schema/1",
                            data_urls=[data_url], uri="at://did:plc:abc/science.alt.dataset.entry/3k")
    return new_index(tmp).dataset_for_entry(entry, DictSample).head(1)


def pickle_with_unpicklable_opener(tmp: Path) -> Any:
    shard = tmp / "ok.tar"
    shard.write_bytes(VALID)
    return pickle.dumps(Dataset[Row](str(shard), opener=lambda url: open(url, "rb")))


def http_storage(url: str) -> dict:
    return {"$type": "science.alt.dataset.storageHttp", "shards": [{"url": url, "checksum": {"algorithm": "sha256", "digest": "00"}}]}


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Case:
    id: str
    attack: Callable[[Path], Any]
    error: type[AtdataError]
    match: str
    #: the typed error expected as ``__cause__`` (Dataset wraps decode errors in ShardError)
    cause: type[AtdataError] | None = None


SHARD_TRUNC = "truncated"
PAYLOAD = "does not decode as Row"

CASES = [
    # ---- tar framing ------------------------------------------------------------------
    Case("tar-empty-file", lambda t: read_shard(b"", t), ShardError, "is empty"),
    Case("tar-cut-mid-header", lambda t: read_shard(VALID[:300], t), ShardError, SHARD_TRUNC),
    Case("tar-cut-mid-member", lambda t: read_shard(VALID[:520], t), ShardError, "needs .* bytes, only"),
    Case("tar-cut-before-end-marker", lambda t: read_shard(VALID[:2048], t), ShardError, "end-of-archive"),
    Case("tar-bad-header-checksum", lambda t: read_shard(VALID[:148] + b"0000000\0" + VALID[156:], t),
         ShardError, "bad tar header checksum"),
    Case("tar-flipped-name-byte", lambda t: read_shard(b"X" + VALID[1:], t), ShardError, "checksum"),
    Case("tar-random-garbage", lambda t: read_shard(bytes(np.random.default_rng(7).integers(0, 256, 4096, np.uint8)), t),
         ShardError, "not a tar file"),
    Case("tar-html-error-page", lambda t: read_shard(b"<html><body>404 Not Found</body></html>\n" * 40, t),
         ShardError, "not a tar file"),
    Case("tar-gzip-compressed", lambda t: read_shard(gzip.compress(VALID), t), ShardError, "gzip-compressed"),
    Case("tar-member-dotdot", lambda t: read_shard(tar_bytes([("../../escape.msgpack", good_payload())]), t),
         ShardError, "'..' name"),
    Case("tar-member-dotdot-inside", lambda t: read_shard(tar_bytes([("a/../../b.msgpack", good_payload())]), t),
         ShardError, "'..' name"),
    Case("tar-member-absolute", lambda t: read_shard(tar_bytes([("/etc/cron.d/x.msgpack", good_payload())]), t),
         ShardError, "absolute"),
    Case("tar-pax-path-traversal", lambda t: read_shard(pax_tar({"path": "../../../etc/x.msgpack"}), t),
         ShardError, "'..' name"),
    Case("tar-pax-path-nul", lambda t: read_shard(pax_tar({"path": "a\0b.msgpack"}), t), ShardError, "absolute or '..'"),
    Case("tar-gnu-longname-absolute", lambda t: read_shard(gnu_longname_tar(b"/" + b"d/" * 80 + b"x.msgpack"), t),
         ShardError, "absolute"),
    Case("tar-symlink-dotdot", lambda t: read_shard(
        tar_bytes([special("../evil", tarfile.SYMTYPE, "/etc/passwd"), ("000000.msgpack", good_payload())]), t),
         ShardError, "'..' name"),
    Case("tar-symlink-posing-as-payload", lambda t: read_shard(
        tar_bytes([special("000000.msgpack", tarfile.SYMTYPE, "/etc/passwd"), ("000000.json", b"{}")]), t),
         ShardError, "missing 'msgpack'"),
    Case("tar-hardlink-absolute", lambda t: read_shard(
        tar_bytes([special("/tmp/evil", tarfile.LNKTYPE, "000000.msgpack"), ("000000.msgpack", good_payload())]), t),
         ShardError, "absolute"),
    Case("tar-hardlink-posing-as-payload", lambda t: read_shard(
        tar_bytes([special("000001.msgpack", tarfile.LNKTYPE, "/etc/shadow"), ("000001.cls", b"1")]), t),
         ShardError, "missing 'msgpack'"),
    Case("tar-char-device-dotdot", lambda t: read_shard(
        tar_bytes([special("../dev/mem", tarfile.CHRTYPE), ("000000.msgpack", good_payload())]), t),
         ShardError, "'..' name"),
    Case("tar-fifo-posing-as-payload", lambda t: read_shard(
        tar_bytes([special("000000.msgpack", tarfile.FIFOTYPE), ("000000.txt", b"x")]), t),
         ShardError, "missing 'msgpack'"),
    Case("tar-size-8gib-octal", lambda t: read_shard(tampered_header(size=b"77777777777"), t),
         ShardError, SHARD_TRUNC),
    Case("tar-size-base256-2^60", lambda t: read_shard(tampered_header(size=b"\x80" + (1 << 60).to_bytes(11, "big")), t),
         ShardError, "claims .* bytes"),
    Case("tar-size-base256-negative", lambda t: read_shard(tampered_header(size=b"\xff" * 12), t),
         ShardError, "size"),
    Case("tar-size-not-octal", lambda t: read_shard(tampered_header(size=b"9zz"), t), ShardError, "size"),
    Case("tar-pax-too-many-records", lambda t: read_shard(pax_tar({f"k{i}": "" for i in range(5000)}), t),
         ShardError, "more than 4096 records"),
    Case("tar-pax-many-global-headers", lambda t: read_shard(global_pax_tar(100, {"comment": "x"}), t),
         ShardError, "more than 64 global pax headers"),
    Case("tar-pax-size-2^40", lambda t: read_shard(pax_tar({"size": str(1 << 40)}), t), ShardError, "claims .* bytes"),
    Case("tar-pax-size-negative", lambda t: read_shard(pax_tar({"size": "-512"}), t), ShardError, "claims -512 bytes"),
    Case("tar-pax-size-not-a-number", lambda t: read_shard(pax_tar({"size": "lots"}), t), ShardError, "bad pax size"),
    Case("tar-pax-length-lies", lambda t: read_shard(pax_tar([b"999 path=x.msgpack\n"]), t), ShardError, "malformed pax"),
    Case("tar-pax-not-utf8", lambda t: read_shard(pax_tar([b"19 path=\xff\xfe.msgpack\n"]), t), ShardError, "not UTF-8"),
    Case("tar-pax-header-1gib", lambda t: read_shard(tampered_header(pax_tar({"path": "a.msgpack"}), size=b"7777777777"), t),
         ShardError, "claims .* bytes"),
    Case("tar-member-name-not-utf8", lambda t: read_shard(tampered_header(name=b"\xff\xfe.msgpack"), t),
         ShardError, "not UTF-8"),
    Case("tar-duplicate-payload-member", lambda t: read_shard(
        tar_bytes([("k.msgpack", good_payload()), ("k.msgpack", good_payload())]), t), ShardError, "two 'msgpack'"),
    Case("tar-sample-without-payload", lambda t: read_shard(tar_bytes([("k.json", b"{}")]), t),
         ShardError, "missing 'msgpack'"),
    # ---- shard URL patterns (brace expansion) -------------------------------------------------
    Case("pattern-range-10^14", lambda t: Dataset[Row](f"{t}/x-{{0..99999999999999}}.tar"), InvalidRefError, "expands to"),
    Case("pattern-product-10^8", lambda t: Dataset[Row](f"{t}/{{0..99}}{{0..99}}{{0..99}}{{0..99}}.tar"),
         InvalidRefError, "expands to"),
    Case("pattern-range-5000-digits", lambda t: Dataset[Row](f"{t}/x-{{0..{'9' * 5000}}}.tar"), InvalidRefError, "expands to"),
    Case("pattern-unbalanced", lambda t: Dataset[Row](f"{t}/x-{{0..3.tar"), InvalidRefError, "malformed"),
    Case("pattern-deep-nesting", lambda t: Dataset[Row]("{" * 50_000 + "a,b" + "}" * 50_000), InvalidRefError, "nests braces"),
    Case("pattern-from-a-pds-record", lambda t: new_index(t).dataset_for_entry(
        LocalDatasetEntry(name="x", schema_ref="atdata://local/schema/Row@1.0.0",
                          data_urls=entry_with_storage(http_storage("https://h.example/{0..9999999999}.tar")).storage.data_urls()),
        Row), InvalidRefError, "expands to"),
    Case("pattern-list-shares-one-budget", lambda t: Dataset[Row]([f"{t}/a-{{0..599999}}.tar", f"{t}/b-{{0..599999}}.tar"]),
         InvalidRefError, "expands to 1200000 shard URLs, with the patterns before it"),
    Case("pattern-url-longer-than-4096-after-expansion", lambda t: Dataset[Row](
        f"{t}/" + ("{" + "a" * 3000 + ",b}") * 3 + ".tar"), InvalidRefError, "characters \\(limit 4096\\)"),
    Case("pattern-record-urls-share-one-budget", lambda t: Dataset[Row](entry_with_storage({
        "$type": "science.alt.dataset.storageExternal",
        "urls": [f"https://h.example/{p}-{{0..599999}}.tar" for p in "ab"]}).storage.data_urls()),
         InvalidRefError, "expands to 1200000"),
    # ---- manifests next to shards ------------------------------------------------------------
    Case("manifest-not-json", lambda t: read_manifest_file(b"{'header': 1}", t), ShardError, "not valid JSON"),
    Case("manifest-not-utf8", lambda t: read_manifest_file(b'{"header": "\xff\xfe"}', t), ShardError, "not valid JSON"),
    Case("manifest-deep-nesting", lambda t: read_manifest_file(b"[" * 200_000 + b"]" * 200_000, t),
         ShardError, "not valid JSON"),
    Case("manifest-not-an-object", lambda t: read_manifest_file(b"[1, 2, 3]", t), ShardError, "expected an object"),
    # ---- msgpack payloads (inside a well-formed shard) -----------------------------------
    Case("msgpack-garbage", lambda t: read_payload(b"\xc1\xc1\xc1", t), ShardError, PAYLOAD, DecodeError),
    Case("msgpack-empty", lambda t: read_payload(b"", t), ShardError, PAYLOAD, DecodeError),
    Case("msgpack-truncated", lambda t: read_payload(good_payload()[:-3], t), ShardError, PAYLOAD, DecodeError),
    Case("msgpack-trailing-bytes", lambda t: read_payload(good_payload() + b"\xc0", t), ShardError, PAYLOAD, DecodeError),
    Case("msgpack-nested-lying-array-headers-16kib", lambda t: read_payload(
        (b"\x82\xa5label\xa1x\xa1v" + b"\xdd\x00\x00\x40\x00" * 1000).ljust(16 << 10, b"\x00"), t),
         ShardError, PAYLOAD, DecodeError),
    Case("msgpack-array32-2^32-1", lambda t: read_payload(b"\x81\xa1v\xdd\xff\xff\xff\xff", t),
         ShardError, "exceeds max_array_len", DecodeError),
    Case("msgpack-map32-2^32-1", lambda t: read_payload(b"\xdf\xff\xff\xff\xff", t),
         ShardError, "exceeds max_map_len", DecodeError),
    Case("msgpack-str32-2^32-1", lambda t: read_payload(b"\x81\xa5label\xdb\xff\xff\xff\xff", t),
         ShardError, "not a valid msgpack", DecodeError),
    Case("msgpack-bin32-2^32-1", lambda t: read_payload(b"\x81\xa1v\xc6\xff\xff\xff\xff", t),
         ShardError, "not a valid msgpack", DecodeError),
    Case("msgpack-ext32-2^32-1", lambda t: read_payload(b"\x81\xa1v\xc9\xff\xff\xff\xff\x05", t),
         ShardError, "ext type", DecodeError),
    Case("msgpack-deep-nesting", lambda t: read_payload(b"\x81\xa1v" + b"\x91" * 200_000 + b"\xc0", t),
         ShardError, "not a valid msgpack", DecodeError),
    Case("msgpack-deep-map-nesting", lambda t: read_payload(b"\x81\xa1a" * 100_000 + b"\xc0", t),
         ShardError, "not a valid msgpack", DecodeError),
    Case("msgpack-ext-type", lambda t: read_payload(b"\x82\xa5label\xa1x\xa1v\xd4\x07\x00", t),
         ShardError, "ext type", DecodeError),
    Case("msgpack-timestamp-ext", lambda t: read_payload(b"\x82\xa5label\xa1x\xa1v\xd6\xff\x00\x00\x00\x00", t),
         ShardError, "ext type", DecodeError),
    Case("msgpack-non-utf8-str", lambda t: read_payload(b"\x82\xa5label\xa2\xff\xfe\xa1v" + msgpack.packb(GOOD_V), t),
         ShardError, "not a valid msgpack", DecodeError),
    Case("msgpack-non-utf8-key", lambda t: read_payload(b"\x81\xa2\xc3\x28\xc0", t),
         ShardError, "not a valid msgpack", DecodeError),
    Case("msgpack-int-key", lambda t: read_payload(msgpack.packb({1: 2}), t), ShardError, "int", DecodeError),
    Case("msgpack-top-level-array", lambda t: read_payload(msgpack.packb(["label", "v"]), t),
         ShardError, "must be a msgpack map", DecodeError),
    Case("msgpack-dotted-key", lambda t: read_payload(payload(**{"label": "x", "v": GOOD_V, "label.evil": 1}), t),
         ShardError, r"no field\(s\) \['label.evil'\]", FieldMismatchError),
    Case("msgpack-dunder-key", lambda t: read_payload(payload(label="x", v=GOOD_V, __class__="os.system"), t),
         ShardError, "__class__", FieldMismatchError),
    Case("msgpack-missing-field", lambda t: read_payload(payload(label="x"), t),
         ShardError, "requires field 'v'", FieldMismatchError),
    Case("msgpack-extra-field", lambda t: read_payload(payload(label="x", v=GOOD_V, w=1), t),
         ShardError, r"no field\(s\) \['w'\]", FieldMismatchError),
    Case("msgpack-str-field-gets-int", lambda t: read_payload(payload(label=5, v=GOOD_V), t),
         ShardError, "Row.label: expects str, got int", DecodeError),
    Case("msgpack-ndarray-field-gets-str", lambda t: read_payload(payload(label="x", v="not bytes"), t),
         ShardError, "expected ndarray bytes", DecodeError),
    Case("msgpack-int-field-gets-bool", lambda t: read_payload(
        payload(s="", i=True, f=1.0, b=True, raw=b"", xs=[]), t, Prims),
         ShardError, "Prims.i: expects int, got bool", DecodeError),
    Case("msgpack-bytes-field-gets-str", lambda t: read_payload(
        payload(s="", i=1, f=1.0, b=True, raw="text", xs=[]), t, Prims),
         ShardError, "Prims.raw: expects bytes, got str", DecodeError),
    Case("msgpack-list-field-gets-mixed", lambda t: read_payload(
        payload(s="", i=1, f=1.0, b=True, raw=b"", xs=[1, "two"]), t, Prims),
         ShardError, r"Prims.xs: expects list\[int\]", DecodeError),
    Case("msgpack-float-field-gets-str", lambda t: read_payload(
        payload(s="", i=1, f="nan", b=True, raw=b"", xs=[]), t, Prims),
         ShardError, "Prims.f: expects float, got str", DecodeError),
    # ---- ndarray bytes (inside a well-formed payload) -------------------------------------
    Case("ndarray-shape-larger-than-data", lambda t: read_array(compact(b"<f8", (1000, 1000), b"\0" * 8), t),
         ShardError, "declares shape", DecodeError),
    Case("ndarray-shape-2^62-squared", lambda t: read_array(compact(b"<f8", (1 << 62, 1 << 62)), t),
         ShardError, "declares shape", DecodeError),
    Case("ndarray-empty-with-2^62-extent", lambda t: read_array(compact(b"<i8", (0, 1 << 62)), t),
         ShardError, "too large for any array", DecodeError),
    Case("ndarray-npy-empty-with-2^62-extent", lambda t: read_array(
        npy("{'descr': '<i8', 'fortran_order': False, 'shape': (0, 4611686018427387904), }"), t),
         ShardError, "too large for any array", DecodeError),
    Case("ndarray-negative-dimension", lambda t: read_array(compact(b"<i4", (-1,), b"\0" * 4), t),
         ShardError, "negative dimension", DecodeError),
    Case("ndarray-too-many-dimensions", lambda t: read_array(compact(b"<i4", (1,) * 64, b"\0" * 4), t),
         ShardError, "64 dimensions", DecodeError),
    Case("ndarray-dtype-lies-about-itemsize", lambda t: read_array(compact(b"<f8", (3,), b"\0" * 12), t),
         ShardError, "12 data bytes follow", DecodeError),
    Case("ndarray-object-dtype", lambda t: read_array(compact(b"|O", (1,), b"\0" * 8), t),
         ShardError, "object dtype", DecodeError),
    Case("ndarray-garbage-dtype", lambda t: read_array(compact(b"\xff\xfe", (1,), b"\0"), t),
         ShardError, "invalid dtype string", DecodeError),
    Case("ndarray-dtype-is-code", lambda t: read_array(compact(f"__import__('os').system('touch {MARKER}')".encode(), (0,)), t),
         ShardError, "invalid dtype string", DecodeError),
    Case("ndarray-compound-dtype-compact", lambda t: read_array(compact(b"i4,i4", (1,), b"\0" * 8), t),
         ShardError, "compound dtype", DecodeError),
    Case("ndarray-zero-width-dtype", lambda t: read_array(compact(b"<U0", (1 << 40,)), t),
         ShardError, "zero-width", DecodeError),
    Case("ndarray-truncated-shape", lambda t: read_array(b"\x03<f8\x04\x01\x00", t),
         ShardError, "truncated inside its shape header", DecodeError),
    Case("ndarray-npy-pickle-object", lambda t: read_array(
        npy("{'descr': '|O', 'fortran_order': False, 'shape': (1,), }", b"\x80\x04\x95cos\nsystem\n"), t),
         ShardError, "object dtype", DecodeError),
    Case("ndarray-npy-header-is-code", lambda t: read_array(
        npy(f"{{'descr': __import__('os').system('touch {MARKER}'), 'fortran_order': False, 'shape': (1,)}}"), t),
         ShardError, "header does not parse", DecodeError),
    Case("ndarray-npy-header-64k", lambda t: read_array(b"\x93NUMPY\x01\x00\xff\xff" + b" " * 100, t),
         ShardError, "exceeds", DecodeError),
    Case("ndarray-npy-shape-lies", lambda t: read_array(npy("{'descr': '<f8', 'fortran_order': False, 'shape': (1099511627776,), }"), t),
         ShardError, "declares shape", DecodeError),
    # ---- schema records and stub generation -------------------------------------------------
    Case("schema-field-python-keyword", lambda t: stub_load(local_record([prim("class")]), t), SchemaError, "not keywords"),
    Case("schema-field-dunder", lambda t: stub_load(local_record([prim("__init__")]), t), SchemaError, "dunder"),
    Case("schema-field-shadows-method", lambda t: stub_load(local_record([prim("from_bytes")]), t), SchemaError, "shadow"),
    Case("schema-field-name-is-code", lambda t: stub_load(
        local_record([prim(f"x = __import__('os').system('touch {MARKER}') #")]), t), SchemaError, "invalid field name"),
    Case("schema-field-name-nfkc-trick", lambda t: type_from_record(local_record([prim("\ufb01le")])),
         SchemaError, "invalid field name"),
    Case("schema-type-name-is-code", lambda t: stub_load(
        local_record(name=f"A(object):\n    import os; os.system('touch {MARKER}')\nclass B"), t),
         SchemaError, "invalid type name"),
    Case("schema-type-name-keyword", lambda t: stub_load(local_record(name="None"), t), SchemaError, "invalid type name"),
    Case("schema-type-name-dunder", lambda t: type_from_record(local_record(name="os.__builtins__")),
         SchemaError, "invalid type name"),
    Case("schema-version-is-code", lambda t: stub_load(local_record(version="1'\nimport os #"), t), SchemaError, "version"),
    Case("schema-primitive-is-code", lambda t: stub_load(local_record([prim("x", "__import__('os')")]), t),
         SchemaError, "unknown primitive"),
    Case("schema-unknown-kind", lambda t: type_from_record(
        local_record([{"name": "x", "fieldType": {"$type": "local#pickle"}, "optional": False}])),
         SchemaError, "unknown kind"),
    Case("schema-lists-nested-too-deep", lambda t: type_from_record(
        local_record([{"name": "x", "fieldType": nested_list(10_000), "optional": False}])),
         SchemaError, "nests lists more than"),
    Case("schema-duplicate-field", lambda t: type_from_record(local_record([prim("x"), prim("x")])),
         SchemaError, "duplicate field"),
    Case("schema-future-format", lambda t: type_from_record(local_record(atdataSchemaVersion=99)),
         SchemaError, "upgrade atdata_dagster"),
    Case("schema-not-an-object", lambda t: type_from_record(["name", "Ok"]), SchemaError, "must be a JSON object"),
    Case("schema-stub-authority-traversal", lambda t: stub_load(local_record(), t, authority="../../etc"),
         SchemaError, "invalid stub authority"),
    # ---- schema refs and AT URIs ---------------------------------------------------------------
    Case("ref-schema-traversal", lambda t: new_index(t).get_schema("atdata://local/schema/../../x@1.0.0"),
         InvalidRefError, "not a \\(dotted\\) identifier"),
    Case("ref-schema-no-version", lambda t: new_index(t).get_schema("atdata://local/schema/Row"),
         InvalidRefError, "missing '@version'"),
    Case("ref-schema-unknown-prefix", lambda t: new_index(t).get_schema("https://evil.example/Row@1.0.0"),
         InvalidRefError, "unknown prefix"),
    Case("ref-schema-version-injection", lambda t: new_index(t).get_schema_type("atdata://local/schema/Row@1.0.0'; DROP TABLE schemas;--"),
         InvalidRefError, "version"),
    Case("ref-schema-not-a-string", lambda t: new_index(t).get_schema(None), InvalidRefError, "expected a string"),
    Case("ref-at-uri-space", lambda t: get_named("at://did:plc:x y/science.alt.dataset.entry/1", t),
         InvalidRefError, "malformed AT URI"),
    Case("ref-at-uri-empty-authority", lambda t: AtUri.parse("at:///science.alt.dataset.entry/1"),
         InvalidRefError, "malformed AT URI"),
    Case("ref-at-uri-newline", lambda t: AtUri.parse("at://did:plc:x/c/r\nEvil: header"), InvalidRefError, "malformed AT URI"),
    Case("ref-dataset-empty", lambda t: get_named("", t), InvalidRefError, "non-empty string"),
    Case("ref-dataset-bytes", lambda t: get_named(b"mnist", t), InvalidRefError, "non-empty string"),
    # ---- dataset names and partition keys ----------------------------------------------------
    Case("name-dotdot", lambda t: write_named("../../etc", t), InvalidNameError, "'..' segment"),
    Case("name-dotdot-inside", lambda t: write_named("a/../../b", t), InvalidNameError, "'..' segment"),
    Case("name-absolute", lambda t: write_named("/etc/passwd", t), InvalidNameError, "absolute"),
    Case("name-nul", lambda t: write_named("a\x00b", t), InvalidNameError, "NUL"),
    Case("name-newline", lambda t: write_named("a\nb", t), InvalidNameError, "control character"),
    Case("name-escape-sequence", lambda t: write_named("a\x1b[31mb", t), InvalidNameError, "control character"),
    Case("name-backslash-traversal", lambda t: write_named("a\\..\\..\\b", t), InvalidNameError, "backslash"),
    Case("name-empty-segment", lambda t: write_named("a//b", t), InvalidNameError, "empty"),
    Case("name-tmp-reserved", lambda t: write_named("a/.tmp-123", t), InvalidNameError, "reserved"),
    Case("name-very-long", lambda t: write_named("n" * 100_000, t), InvalidNameError, "limit is 512"),
    Case("name-segment-over-255-bytes", lambda t: write_named("é" * 200, t), InvalidNameError, "255 bytes"),
    Case("name-lone-surrogate", lambda t: write_named("a\udc80b", t), InvalidNameError, "lone surrogate"),
    Case("ref-lone-surrogate", lambda t: get_named("a\ud800", t), InvalidRefError, "lone surrogate"),
    Case("name-not-a-string", lambda t: write_named(["a", "b"], t), InvalidNameError, "must be a string"),
    Case("name-asset-metadata-dotdot", lambda t: dataset_name(dg.AssetKey(["x"]), "p", base="../../x"),
         InvalidNameError, "'..' segment"),
    Case("name-asset-key-too-long", lambda t: dataset_name(dg.AssetKey(["k" * 300]), None), InvalidNameError, "limit"),
    Case("asset-metadata-maxcount-negative", lambda t: asset_settings({"atdata/maxcount": -1}, dg.AssetKey(["x"])),
         ConfigurationError, "'atdata/maxcount' must be a positive integer"),
    Case("asset-metadata-maxsize-bool", lambda t: asset_settings({"atdata/maxsize": True}, dg.AssetKey(["x"])),
         ConfigurationError, "'atdata/maxsize' must be a positive integer"),
    Case("asset-metadata-name-not-a-string", lambda t: asset_settings({"atdata/name": ["..", "x"]}, dg.AssetKey(["x"])),
         ConfigurationError, "'atdata/name' must be a string"),
    Case("partition-key-lone-surrogate", lambda t: dataset_name(dg.AssetKey(["x"]), "\ud800"),
         InvalidNameError, "partition key"),
    Case("partition-key-not-a-string", lambda t: dataset_name(dg.AssetKey(["x"]), 5),
         InvalidNameError, "partition key"),
    Case("partition-name-bad-escape", lambda t: parse_dataset_name("x/partition=%zz"),
         InvalidNameError, "not an escaped name segment"),
    # ---- index rows written by other tools ------------------------------------------------------
    Case("index-row-urls-not-msgpack", lambda t: raw_index_row(t, data_urls=b"\xc1\xff"), ProviderError, "data_urls"),
    Case("index-row-urls-huge-array", lambda t: raw_index_row(t, data_urls=b"\xdd\xff\xff\xff\xff"), ProviderError, "data_urls"),
    Case("index-row-urls-not-a-list", lambda t: raw_index_row(t, data_urls=msgpack.packb({"a": 1})), ProviderError, "data_urls"),
    Case("index-row-metadata-not-msgpack", lambda t: raw_index_row(t, data_urls=msgpack.packb(["x"]), metadata=b"\xc1"),
         ProviderError, "metadata"),
    Case("index-row-metadata-not-a-map", lambda t: raw_index_row(t, data_urls=msgpack.packb(["x"]), metadata=msgpack.packb([1])),
         ProviderError, "metadata"),
    Case("index-schema-row-not-json", lambda t: raw_schema_row(t, "{not json"), SchemaError, "not valid JSON"),
    Case("index-schema-row-not-an-object", lambda t: raw_schema_row(t, "[1, 2]"), SchemaError, "JSON object"),
    Case("index-schema-row-code-in-field", lambda t: raw_schema_row(t, json.dumps(local_record(
        [prim(f"__import__('os').system('touch {MARKER}')")], name="Hostile"))), SchemaError, "invalid field name"),
    # ---- ATProto records from a PDS ---------------------------------------------------------------
    Case("record-schema-gets-entry-type", lambda t: SchemaRecord.from_record(dict(ENTRY), uri="at://did:plc:a/c/1"),
         RecordError, "expected 'science.alt.dataset.schema'"),
    Case("record-entry-gets-post-type", lambda t: EntryRecord.from_record({"$type": "app.bsky.feed.post", "text": "hi"}),
         RecordError, "not a dataset entry"),
    Case("record-label-gets-schema-type", lambda t: DatasetLabel.from_record({"$type": "science.alt.dataset.schema"}),
         RecordError, "expected 'science.alt.dataset.label'"),
    Case("record-not-an-object", lambda t: EntryRecord.from_record("science.alt.dataset.entry"), RecordError, "\\$type"),
    Case("record-type-not-a-string", lambda t: SchemaRecord.from_record({"$type": ["x"], "name": "a", "version": "1"}),
         RecordError, "\\$type"),
    Case("record-entry-without-storage", lambda t: EntryRecord.from_record(dict(ENTRY)), RecordError, "no 'storage'"),
    Case("record-entry-unknown-storage", lambda t: entry_with_storage({"$type": "science.alt.dataset.storageFtp"}),
         RecordError, "storage has \\$type"),
    Case("record-entry-storage-shards-not-list", lambda t: entry_with_storage(
        {"$type": "science.alt.dataset.storageHttp", "shards": 5}), RecordError, "malformed storageHttp"),
    Case("record-entry-blob-without-cid", lambda t: entry_with_storage(
        {"$type": "science.alt.dataset.storageBlobs", "blobs": [{"blob": {"$type": "blob"}}]}),
         RecordError, "not a blob reference"),
    Case("record-entry-http-url-is-local-file", lambda t: entry_with_storage(http_storage("file:///etc/passwd")),
         RecordError, "http"),
    Case("record-entry-http-url-is-local-path", lambda t: entry_with_storage(http_storage("/dev/zero")),
         RecordError, "http"),
    # Records that get past the parsers still cannot make a reader open its own files.
    Case("opener-foreign-entry-names-a-local-path", lambda t: foreign_entry_read("/dev/zero", t),
         StoreError, "refusing to open local file"),
    Case("opener-foreign-entry-names-a-file-url", lambda t: foreign_entry_read("file:///etc/passwd", t),
         StoreError, "refusing to open local file"),
    Case("opener-dataset-route-cannot-be-pickled", pickle_with_unpicklable_opener,
         ConfigurationTypeError, "cannot be pickled: its shard opener"),
    Case("record-schema-field-name-is-code", lambda t: SchemaRecord.from_record({
        "$type": "science.alt.dataset.schema", "name": "A", "version": "1.0.0",
        "fields": [prim("x; import os")]}), RecordError, "x; import os"),
    Case("record-schema-json-property-union", lambda t: type_from_record({
        "$type": "science.alt.dataset.schema", "name": "A", "version": "1.0.0",
        "schema": {"type": "object", "properties": {"x": {"type": ["string", "integer"]}}, "required": ["x"]}}),
         SchemaError, "multi-type union"),
    Case("record-schema-json-type-is-an-object", lambda t: SchemaRecord.from_record({
        "$type": "science.alt.dataset.schema", "name": "A", "version": "1.0.0",
        "schema": {"type": "object", "properties": {"x": {"type": {"$ref": "#/x"}}}, "required": ["x"]}}),
         RecordError, "unsupported JSON-Schema type"),
    Case("record-schema-json-type-is-an-object-local", lambda t: type_from_record({
        "name": "A", "version": "1.0.0",
        "schema": {"type": "object", "properties": {"x": {"type": {"$ref": "#/x"}}}, "required": ["x"]}}),
         SchemaError, "unsupported JSON-Schema type"),
    Case("record-schema-json-property-name-is-code", lambda t: SchemaRecord.from_record({
        "$type": "science.alt.dataset.schema", "name": "A", "version": "1.0.0",
        "schema": {"type": "object", "properties": {"x=os.system('id')": {"type": "string"}}, "required": []}}),
         RecordError, "invalid property name"),
    Case("record-schema-future-version", lambda t: SchemaRecord.from_record({
        "$type": "science.alt.dataset.schema", "name": "A", "version": "1", "atdataSchemaVersion": 7, "fields": []}),
         SchemaError, "upgrade atdata_dagster"),
]


class Hang(BaseException):
    """Raised by the alarm: a BaseException, so no ``except Exception`` in the engine can swallow it."""


def _alarm(signum, frame):
    raise Hang(f"no answer within {TIMEOUT} s")


def _foreign_causes(exc: BaseException) -> list[BaseException]:
    """Explicit causes in the chain that are not our typed errors (a crash wrapped in ours)."""
    out = []
    seen = exc.__cause__
    while seen is not None:
        if not isinstance(seen, AtdataError):
            out.append(seen)
        seen = seen.__cause__
    return out


def test_corpus_is_large_and_ids_are_unique():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    assert len(CASES) >= 60


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input_raises_its_typed_error(case: Case, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a payload that ran 'touch PWNED' would leave the file here
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, TIMEOUT)
    tracemalloc.start()
    caught: BaseException | None = None
    try:
        case.attack(tmp_path)
    except Hang:
        raise
    except Exception as exc:  # noqa: BLE001 - judged below: only our typed error passes
        caught = exc
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert caught is not None, f"{case.id}: the hostile input was accepted"
    assert isinstance(caught, case.error), (
        f"{case.id}: crashed with {type(caught).__module__}.{type(caught).__qualname__}: {caught}"
    )
    assert re.search(case.match, str(caught)), f"{case.id}: message {str(caught)!r} lacks {case.match!r}"
    assert not _foreign_causes(caught), f"{case.id}: our error wraps a crash: {_foreign_causes(caught)!r}"
    if case.cause is not None:
        assert isinstance(caught.__cause__, case.cause), f"{case.id}: cause is {caught.__cause__!r}"
    assert peak < MAX_PEAK, f"{case.id}: allocated {peak >> 20} MiB at the peak"
    assert not (tmp_path / MARKER).exists() and not Path(MARKER).exists(), f"{case.id}: record content was executed"


# --------------------------------------------------------------------------- content that must stay data


@pytest.mark.parametrize(
    "description",
    [
        '"""\nimport os; os.system("touch PWNED")\n"""',
        "\\\"\"\"; __import__('os').system('touch PWNED') #",
        "\u2028\u2029\r\x00\x1b]0;title\x07\n\"\"\"\nraise SystemExit",
    ],
    ids=["triple-quotes", "escaped-quotes", "line-separators-and-controls"],
)
def test_stub_docstring_injection_stays_a_docstring(description, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    record = local_record([prim("x")], name="Doc", description=description)
    cls = StubManager(tmp_path / "stubs").load_type(record)
    assert cls.__doc__ == description
    assert not (tmp_path / MARKER).exists()
    assert [f for f in cls.__dataclass_fields__] == ["x"]


def test_stub_ndarray_dtype_with_code_becomes_an_untyped_array(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    record = local_record([{"name": "a", "fieldType": {"$type": "local#ndarray",
                                                      "dtype": f"__import__('os').system('touch {MARKER}')"},
                            "optional": False}], name="Arr")
    source = StubManager(tmp_path / "stubs").render(record)
    assert "__import__" not in source and "a: NDArray[Any]" in source
    cls = StubManager(tmp_path / "stubs").load_type(record)
    assert cls(a=np.arange(2)).packed  # usable, and nothing ran
    assert not (tmp_path / MARKER).exists()


def test_hostile_payload_read_as_dictsample_keeps_keys_as_data(tmp_path):
    # DictSample accepts any str keys; dotted and dunder keys stay keys, never attributes.
    data = payload(**{"a.b": 1, "__class__": "os.system", "__dict__": {}})
    [sample] = read_payload(data, tmp_path, DictSample)
    assert sample["a.b"] == 1 and sample["__class__"] == "os.system"
    assert type(sample) is DictSample


# --------------------------------------------------------------------------- the same rows on the real servers


@pytest.mark.redis
def test_redis_entry_hash_corrupted_by_another_tool_is_a_provider_error(redis_url, tmp_path):
    import redis

    conn = redis.Redis.from_url(redis_url)
    index = local.Index(redis=conn, data_store=LocalDiskStore(str(tmp_path / "data")), atmosphere=None)
    entry = index.write_samples([Row(label="a", v=np.zeros(2))], name="victim")
    key = f"LocalDatasetEntry:{entry.cid}"
    for field, value, column in (("data_urls", b"\xc1\xff", "data_urls"), ("data_urls", msgpack.packb({"a": 1}), "data_urls"),
                                 ("metadata", b"\xdd\xff\xff\xff\xff", "metadata")):
        conn.hset(key, "data_urls", msgpack.packb(entry.data_urls))
        conn.hset(key, field, value)
        with pytest.raises(ProviderError, match=f"column {column}") as info:
            index.get_dataset("victim")
        assert key in str(info.value) and not _foreign_causes(info.value)


@pytest.mark.postgres
@pytest.mark.parametrize("ref", ["a\x00b", "a\ud800"], ids=["nul", "lone-surrogate"])
def test_postgres_lookup_of_a_name_it_cannot_store_is_a_typed_error(postgres_dsn, ref, tmp_path):
    index = local.Index(dsn=postgres_dsn, data_store=LocalDiskStore(str(tmp_path / "data")), atmosphere=None)
    with pytest.raises(AtdataError, match="NUL|lone surrogate"):
        index.get_dataset(ref)
    with pytest.raises(InvalidNameError):
        index.write_samples([Row(label="a", v=np.zeros(2))], name=ref)
