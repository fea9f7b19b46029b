"""``atdata-dagster``: inspect, verify, promote and clean an index from the shell.

The index is chosen with ``--index URL`` (or the ``ATDATA_INDEX`` environment variable):
``sqlite:///path/index.db``, ``postgresql://user@host/db`` or ``redis://host:6379/0``;
the default is atdata's ``~/.atdata/index.db``. ``--data-root`` names the local shard
directory (default ``~/.atdata/data``), used by ``gc``. Every command takes ``--json``
for scripts.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import sys
import time
from typing import Any, Iterable, Iterator, TypeVar

from .atmosphere import AtmosphereClient
from .errors import AtdataError, CorruptEntryError, GcRefusedError, NotFoundError
from .gc import collect_garbage, sqlite_index_path
from .index.index import Index, recorded_shard_sizes
from .index.providers import provider_from_url
from .redact import redact
from .repair import repair_entry
from .samples.schema import field_type_text
from .shards.reader import verify_shards
from .stores.disk import LocalDiskStore
from .stores.s3 import S3DataStore
from .text import human_bytes

T = TypeVar("T")

__all__ = ["main", "build_parser"]


#: Seconds between plain progress lines when stderr is not a terminal (logs, CI).
PLAIN_PROGRESS_EVERY = 5.0


class _Progress:
    """Progress of long work on stderr, counted in items or bytes.

    On a terminal: a one-line bar, redrawn at most ten times a second. Otherwise (a log
    file, CI): a plain line every :data:`PLAIN_PROGRESS_EVERY` seconds, and a last one
    when the work ends, so short work prints nothing. ``enabled=False`` (``--json``): silent.
    """

    def __init__(self, total: int, label: str, *, unit: str = "items", enabled: bool = True,
                 tty: bool | None = None) -> None:
        self.total, self.label, self.unit, self.done = total, label, unit, 0
        self.enabled = enabled
        self.tty = sys.stderr.isatty() if tty is None else tty
        self._last = time.monotonic() if not self.tty else 0.0
        self._printed = False

    def _amount(self, n: int) -> str:
        return human_bytes(n) if self.unit == "bytes" else f"{n:,}"

    def step(self, n: int = 1) -> None:
        self.done += n
        if not self.enabled:
            return
        now = time.monotonic()
        finished = self.done >= self.total
        share = min(self.done / self.total, 1.0) if self.total > 0 else 1.0
        text = f"{self._amount(self.done)}/{self._amount(self.total)}"
        if self.tty:
            if now - self._last > 0.1 or finished:
                self._last = now
                filled = int(30 * share)
                sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] {text}")
                if finished:
                    sys.stderr.write("\n")
                sys.stderr.flush()
        elif now - self._last >= PLAIN_PROGRESS_EVERY or (finished and self._printed):
            self._last = now
            self._printed = not finished
            sys.stderr.write(f"{self.label}: {text} ({share:.0%})\n")
            sys.stderr.flush()

    def wrap(self, items: Iterable[T]) -> Iterator[T]:
        for item in items:
            yield item
            self.step()


_CID = re.compile(r"bafy[a-z2-7]{20,}")


def _lookup(index: Any, ref: str) -> Any:
    """The entry a dataset name (``repo/name``, ``@handle/name``) or a CID names."""
    try:
        return index.get_dataset(ref)
    except NotFoundError:
        if _CID.fullmatch(ref):
            return index.get_entry(ref)
        raise


def _require_existing_index(url: str | None) -> None:
    """Refuse a SQLite index file that does not exist: opening it would create an empty one,
    so a typo in --index would silently show nothing (or let gc see no references)."""
    path = sqlite_index_path(url)
    if path is not None and not path.exists():
        raise NotFoundError(
            f"no index at {path}: check --index (or ATDATA_INDEX); an index is created by writing to it "
            "(e.g. `make demo`, Index.write), never by this command"
        )


def _open_index(args: argparse.Namespace):
    url = args.index or os.environ.get("ATDATA_INDEX")
    if args.command != "gc":  # gc makes the same check itself, with its own message and --force
        _require_existing_index(url)
    store = _store_from(args.store or os.environ.get("ATDATA_STORE") or args.data_root)
    atmosphere = None
    if getattr(args, "handle", None):
        password = os.environ.get("ATDATA_APP_PASSWORD")
        if not password:
            raise SystemExit("set ATDATA_APP_PASSWORD to the app password of --handle")
        atmosphere = AtmosphereClient(args.service, handle=args.handle, password=password)
    index = Index(provider_from_url(url), data_store=store, atmosphere=atmosphere) if url else Index(
        data_store=store, atmosphere=atmosphere
    )
    args.opened_index = index  # main() closes it
    return index


def _store_from(spec: str | None):
    """The shard store named on the command line: a directory, or ``s3://bucket[/prefix]``.

    S3 takes its endpoint from ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``), its
    region from ``AWS_REGION`` and its credentials from boto3's default chain
    (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``~/.aws``): never from arguments,
    which other users of the machine could read.
    """
    if not spec:
        return None
    if spec.startswith("s3://"):
        bucket, _, prefix = spec[len("s3://"):].partition("/")
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
        return S3DataStore(bucket=bucket, prefix=prefix.strip("/"), endpoint_url=endpoint,
                           region_name=os.environ.get("AWS_REGION") or None)
    return LocalDiskStore(spec)


def _entry_summary(entry) -> dict[str, Any]:
    """One row of ``list``; an entry with malformed metadata gets an ``error`` instead of its stats."""
    meta = entry.metadata if isinstance(entry.metadata, dict) else {}
    try:
        stats, error = entry.stats, None
    except CorruptEntryError as exc:
        stats, error = {}, str(exc)
    atmosphere = meta.get("atmosphere")
    row = {
        "name": entry.name,
        "cid": entry.cid,
        "schema_ref": entry.schema_ref,
        "samples": stats.get("num_samples"),
        "shards": len(entry.data_urls),
        "bytes": stats.get("total_bytes"),
        "created_at": entry.created_at,
        "promoted": atmosphere.get("uri") if isinstance(atmosphere, dict) else None,
    }
    if error is not None:
        row["error"] = error
    return row


def _fmt_bytes(size: int | None) -> str:
    return "?" if size is None else human_bytes(size)


def _current_cid(index: Any, name: str) -> str | None:
    """The CID ``name`` resolves to (its label, else its newest entry), or ``None``."""
    try:
        return index.get_dataset(name).cid
    except AtdataError:
        return None


def cmd_list(args: argparse.Namespace, out) -> int:
    index = _open_index(args)
    rows = [_entry_summary(e) for e in index.list_datasets(args.repo)]
    rows.sort(key=lambda r: (r["name"], r["created_at"] or ""))
    current = {name: _current_cid(index, name) for name in dict.fromkeys(r["name"] for r in rows)}
    for r in rows:
        r["current"] = current[r["name"]] == r["cid"]
    if args.json:
        json.dump(rows, out, indent=2)
        out.write("\n")
        return 0
    if not rows:
        out.write("no datasets\n")
        return 0
    several = {r["name"] for r in rows if sum(1 for o in rows if o["name"] == r["name"]) > 1}
    out.write(f"  {'NAME':<32} {'SAMPLES':>9} {'SHARDS':>6} {'SIZE':>10}  CID\n")
    for r in rows:
        samples = "?" if r["samples"] is None else str(r["samples"])
        mark = "*" if r["current"] and r["name"] in several else " "
        out.write(f"{mark} {r['name']:<32} {samples:>9} {r['shards']:>6} {_fmt_bytes(r['bytes']):>10}  {r['cid']}\n")
    if several:
        out.write("* = current: the version the name resolves to (its label); the others are older versions\n")
    for r in rows:
        if "error" in r:
            sys.stderr.write(f"error: {r['error']}\n")
    return 0


def cmd_show(args: argparse.Namespace, out) -> int:
    index = _open_index(args)
    entry = _lookup(index, args.name)
    try:
        schema = index.get_schema(entry.schema_ref)
    except AtdataError as exc:
        schema = {"error": str(exc)}
    meta = entry.metadata if isinstance(entry.metadata, dict) else {}
    summary = _entry_summary(entry)
    resolves_to = _current_cid(index, entry.name)
    summary["current"] = resolves_to == entry.cid
    try:
        checksums = entry.checksums
    except CorruptEntryError as exc:
        checksums = {}
        summary.setdefault("error", str(exc))
    lineage = meta.get("lineage") if isinstance(meta.get("lineage"), dict) else None
    doc = {
        **summary,
        "data_urls": entry.data_urls,
        "checksums": checksums,
        "schema": schema,
        "lineage": lineage,
        "metadata": {k: v for k, v in meta.items() if k not in ("checksums", "lineage")},
    }
    if args.json:
        json.dump(doc, out, indent=2, default=str)
        out.write("\n")
        return 0 if "error" not in doc else 1
    out.write(f"{entry.name}  ({entry.cid})\n")
    if not doc["current"]:
        out.write(f"  current   no: {entry.name!r} resolves to {resolves_to} (this is an older version)\n")
    out.write(f"  schema    {entry.schema_ref}\n")
    for f in schema.get("fields", []):
        t = field_type_text(f.get("fieldType", {}))
        out.write(f"              {f['name']}: {t}{' (optional)' if f.get('optional') else ''}\n")
    out.write(f"  samples   {doc['samples'] if doc['samples'] is not None else '?'}\n")
    out.write(f"  size      {_fmt_bytes(doc['bytes'])} in {len(entry.data_urls)} shard(s)\n")
    for url in entry.data_urls:
        out.write(f"    {url}  sha256={checksums.get(url, '-')[:16]}\n")
    if lineage:
        out.write("  lineage\n")
        for k in ("asset_key", "partition", "run_id", "code_version"):
            if lineage.get(k) is not None:
                out.write(f"    {k:<12} {lineage[k]}\n")
        for up in lineage.get("upstream") or []:
            out.write(f"    upstream     {up.get('asset_key')} {up.get('partition') or ''} {up.get('cid')}\n")
    if doc["promoted"]:
        out.write(f"  atmosphere {doc['promoted']}\n")
    if "error" in doc:
        sys.stderr.write(f"error: {doc['error']}\n")
        return 1
    return 0


def cmd_verify(args: argparse.Namespace, out) -> int:
    index = _open_index(args)
    entry = _lookup(index, args.name)
    checksums = entry.checksums  # CorruptEntryError (exit 2) if this entry's checksums are malformed
    results: dict[str, str] = {}
    opener, sizes = index.shard_opener(entry), recorded_shard_sizes(entry)  # bounded by the recorded sizes
    if sizes:
        bar = _Progress(sum(sizes.values()), "verify", unit="bytes", enabled=not args.json)
    else:  # sizes not recorded (an older or foreign entry): count shards
        bar = _Progress(len(entry.data_urls), "verify", enabled=not args.json)
    for url in entry.data_urls:
        results.update(verify_shards([url], checksums, opener=opener, sizes=sizes))
        bar.step(sizes.get(url, 0) if sizes else 1)
    bad = {u: s for u, s in results.items() if s not in ("ok", "skipped")}
    if args.json:
        json.dump({"name": entry.name, "cid": entry.cid, "ok": not bad, "shards": results}, out, indent=2)
        out.write("\n")
    else:
        for url, status in results.items():
            out.write(f"{status:<10} {url}\n")
        out.write(f"{entry.name}: {'OK' if not bad else f'{len(bad)} bad shard(s)'}\n")
    return 0 if not bad else 1


def cmd_repair(args: argparse.Namespace, out) -> int:
    """Restore damaged shards of an entry from intact copies with the same checksum."""
    index = _open_index(args)
    entry = _lookup(index, args.name)
    result = repair_entry(index, entry, dry_run=args.dry_run)
    if args.json:
        json.dump({"name": result.name, "cid": result.cid, "ok": result.ok, "dry_run": result.dry_run,
                   "shards": [{"url": s.url, "was": s.was, "restored_from": s.restored_from, "note": s.note}
                              for s in result.shards]}, out, indent=2)
        out.write("\n")
        return 0 if result.ok else 1
    verb = "would restore" if args.dry_run else "restored"
    for s in result.shards:
        if s.restored:
            out.write(f"{verb} {s.url} ({s.was}) from {s.restored_from}\n")
        else:
            out.write(f"still {s.was}: {s.url}\n  {s.note}\n")
    if not result.shards:
        out.write(f"{entry.name} ({entry.cid}): every shard is intact, nothing to repair\n")
    else:
        fixed = sum(s.restored for s in result.shards)
        out.write(f"{entry.name} ({entry.cid}): {fixed} of {len(result.shards)} damaged shard(s) {verb}\n")
    return 0 if result.ok else 1


def cmd_promote(args: argparse.Namespace, out) -> int:
    index = _open_index(args)
    entry = _lookup(index, args.name)
    local_bytes = sum(size for url, size in recorded_shard_sizes(entry).items() if "://" not in url or url.startswith("file://"))
    bar = _Progress(local_bytes, "upload", unit="bytes", enabled=not args.json and local_bytes > 0)
    uri = index.promote(args.name, name=args.as_name, description=args.description,
                              tags=args.tag or None, license=args.license, progress=bar.step)
    if args.json:
        json.dump({"name": args.name, "uri": uri}, out)
        out.write("\n")
    else:
        out.write(f"{args.name} -> {uri}\n")
    return 0


def cmd_gc(args: argparse.Namespace, out) -> int:
    """Delete shards (and temporary leftovers) that no entry of any repository references."""
    url = args.index or os.environ.get("ATDATA_INDEX")
    path = sqlite_index_path(url)
    if path is not None and not path.exists() and not args.force:
        # checked before opening: opening a SQLite index creates it, empty
        raise GcRefusedError(
            f"the index {path} does not exist (a typo in --index?); gc on a new, empty index would delete "
            "every shard of the store. Pass --force if you really mean it"
        )
    index = _open_index(args)
    bar = _Progress(0, "gc", enabled=not args.json)

    def wrap(candidates):
        bar.total = max(len(candidates), 1)
        return bar.wrap(candidates)

    result = collect_garbage(index, grace=args.grace, dry_run=args.dry_run, force=args.force, progress=wrap)
    if args.json:
        json.dump({"deleted" if not args.dry_run else "would_delete": list(result),
                   "kept_young": result.kept_young, "kept_referenced": result.kept_referenced,
                   "aborted_uploads": result.aborted_uploads}, out, indent=2)
        out.write("\n")
    else:
        for u in result:
            out.write(f"{'would delete' if args.dry_run else 'deleted'} {u}\n")
        out.write(f"{len(result)} unreferenced object(s) {'found' if args.dry_run else 'removed'}\n")
        if result.kept_young:
            out.write(f"kept {len(result.kept_young)} unreferenced object(s) younger than --grace "
                      f"{args.grace:g}s (writes that may still commit)\n")
        if result.kept_referenced:
            out.write(f"kept {len(result.kept_referenced)} object(s) referenced by entries committed while gc ran\n")
        if result.aborted_uploads:
            out.write(f"aborted {result.aborted_uploads} unfinished multipart upload(s)\n")
    return 0


def _version() -> str:
    try:
        return importlib.metadata.version("atdata-dagster")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``atdata-dagster``."""
    def global_options(parser: argparse.ArgumentParser, default: Any) -> None:
        # the same options before or after the verb; after it they override (SUPPRESS: unset stays unset)
        parser.add_argument("--index", default=default,
                            help="index URL: sqlite:///path, postgresql://..., redis://... (env ATDATA_INDEX)")
        parser.add_argument("--store", default=default,
                            help="shard store: a directory or s3://bucket[/prefix]; S3 endpoint and credentials "
                            "come from AWS_ENDPOINT_URL / AWS_* or ~/.aws (env ATDATA_STORE)")
        parser.add_argument("--data-root", default=default,
                            help="local shard directory (default ~/.atdata/data); same as --store DIR")
        parser.add_argument("--json", action="store_true", default=default or False, help="machine-readable output")

    p = argparse.ArgumentParser(prog="atdata-dagster", description=__doc__.split("\n\n")[0])
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    global_options(p, None)
    after = argparse.ArgumentParser(add_help=False)
    global_options(after, argparse.SUPPRESS)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, parents=[after])

    s = add("list", "list datasets")
    s.add_argument("--repo", default=None, help="only this repository ('local', a mounted name)")
    s.set_defaults(func=cmd_list)

    s = add("show", "show an entry: schema, shards, lineage")
    s.add_argument("name", help="dataset name (repo/name, @handle/name) or CID")
    s.set_defaults(func=cmd_show)

    s = add("verify", "re-hash every shard against the recorded checksums")
    s.add_argument("name", help="dataset name or CID")
    s.set_defaults(func=cmd_verify)

    s = add("repair", "restore damaged or missing shards of an entry from intact copies with the same checksum")
    s.add_argument("name", help="dataset name or CID")
    s.add_argument("--dry-run", action="store_true", help="find and check the copies, write nothing")
    s.set_defaults(func=cmd_repair)

    s = add("promote", "publish an entry to the atmosphere (password from ATDATA_APP_PASSWORD)")
    s.add_argument("name", help="dataset name (its latest version is published)")
    s.add_argument("--handle", required=True, help="your ATProto handle, e.g. alice.bsky.social")
    s.add_argument("--service", default="https://bsky.social", help="PDS URL (default https://bsky.social)")
    s.add_argument("--as-name", dest="as_name", default=None, help="publish under this name (default: the entry's)")
    s.add_argument("--description", default=None, help="description of the published dataset record")
    s.add_argument("--tag", action="append", help="a tag of the published record (repeatable)")
    s.add_argument("--license", default=None, help="license of the published record, e.g. CC-BY-4.0")
    s.set_defaults(func=cmd_promote)

    s = add("gc", "delete shards that no entry references")
    s.add_argument("--dry-run", action="store_true", help="say what would be deleted, delete nothing")
    s.add_argument("--grace", type=float, default=3600.0,
                   help="keep unreferenced files younger than this many seconds (writes in progress); default 3600")
    s.add_argument("--force", action="store_true",
                   help="skip the ownership checks (index missing or empty, store unmarked or shared with other "
                   "indexes, the shared default root); references are always checked")
    s.set_defaults(func=cmd_gc)
    return p


def main(argv: list[str] | None = None, out=None) -> int:
    """Entry point of the ``atdata-dagster`` console script."""
    out = out or sys.stdout
    args = build_parser().parse_args(argv)
    try:
        return args.func(args, out)
    except AtdataError as exc:
        sys.stderr.write(f"error: {redact(exc)}\n")  # errors are redacted already; env secrets too
        return 2
    finally:
        index = getattr(args, "opened_index", None)
        if index is not None:
            index.close()  # connections and S3 upload threads, also when main() runs in-process


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
