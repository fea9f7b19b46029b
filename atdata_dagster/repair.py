"""Repair: restore an entry's damaged shards from intact copies, explicitly and verifiably.

:func:`repair_entry` (``atdata-dagster repair NAME|CID``) re-hashes every shard of one
entry. For each shard that is missing or no longer matches its recorded SHA-256 it looks
for another shard, referenced by any entry of any mounted repository, with that same
recorded SHA-256 (shards are content-addressed, so re-materializing the same data, or the
same data in another repository, yields one); it re-hashes that copy, and only when the
copy's bytes match puts them back in place, atomically (``DataStore.restore``: readers see
the damaged object or the whole good one). The restored shard is verified again.

It never deletes anything, never writes outside a store of this index, and never writes
bytes that did not hash to the recorded checksum. A shard with no intact copy is reported
with what to do: re-materialize the asset named by the entry's lineage (the new entry
becomes the name's current one), then run ``repair`` again to mend this entry from it, or
leave the damaged entry for ``gc`` once nothing references it.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass, field
from typing import Any

from .errors import AtdataError
from .shards.reader import verify_shards

__all__ = ["RepairResult", "ShardRepair", "repair_entry"]

_CHUNK = 1 << 20
_SPOOL_IN_MEMORY = 64 << 20  # bigger copies spill to a temporary file while they are checked


@dataclass
class ShardRepair:
    """What happened to one damaged shard: ``restored_from`` is the copy used, else ``None``."""

    url: str
    was: str  # the verify status that made it damaged: mismatch / missing / error:...
    restored_from: str | None = None
    note: str = ""

    @property
    def restored(self) -> bool:
        return self.restored_from is not None


@dataclass
class RepairResult:
    """The entry checked, and one :class:`ShardRepair` per shard that was damaged."""

    name: str
    cid: str
    shards: list[ShardRepair] = field(default_factory=list)
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        """Every shard is intact now (or, in a dry run, would be)."""
        return all(s.restored for s in self.shards)


def _stores_of(index: Any) -> list[Any]:
    return [r.data_store for r in index.repos.values() if r.data_store is not None]


def _copies(index: Any, entry: Any, wanted: set[str], damaged: set[str]) -> dict[str, list[tuple[str, Any]]]:
    """sha256 -> [(url, entry)] of other shards, in any mounted repository, recorded with that checksum."""
    out: dict[str, list[tuple[str, Any]]] = {}
    for repo in index.repos.values():
        for other in repo.provider.iter_entries():
            if other.cid == entry.cid:
                continue
            try:
                checksums = other.checksums
            except AtdataError:  # an unreadable entry offers no trustworthy copy
                continue
            for url, sha in checksums.items():
                if sha in wanted and url not in damaged:
                    out.setdefault(sha, []).append((url, other))
    return out


def _checked_copy(index: Any, url: str, owner: Any, sha256: str) -> Any | None:
    """The bytes of ``url`` in a rewound spool file when they hash to ``sha256``, else ``None``."""
    spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY)
    digest = hashlib.sha256()
    try:
        with index.shard_opener(owner)(url) as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
                spool.write(chunk)
    except (AtdataError, OSError):
        spool.close()
        return None
    if digest.hexdigest() != sha256:
        spool.close()
        return None
    spool.seek(0)
    return spool


def _hint(entry: Any) -> str:
    lineage = (entry.metadata or {}).get("lineage") or {}
    key = lineage.get("asset_key")
    asset = "/".join(key) if isinstance(key, list) and all(isinstance(k, str) for k in key) else None
    where = f"re-materialize asset {asset!r}" + (f" (partition {lineage['partition']!r})" if lineage.get("partition") else "") \
        if asset else f"write dataset {entry.name!r} again"
    return (f"no intact copy with this checksum is indexed: {where}; the new entry becomes the name's current one, "
            "then run repair again to mend this entry from it (or leave this entry for gc)")


def repair_entry(index: Any, entry: Any, *, dry_run: bool = False) -> RepairResult:
    """Restore ``entry``'s damaged shards from intact copies; see the module docstring.

    ``dry_run`` finds and checks the copies but writes nothing. Raises
    :class:`~atdata_dagster.errors.CorruptEntryError` when the entry's own checksums are
    unreadable (nothing could be checked against them).
    """
    checksums = entry.checksums
    status = index.verify(entry)
    damaged = {u: s for u, s in status.items() if s not in ("ok", "skipped")}
    result = RepairResult(name=entry.name, cid=entry.cid, dry_run=dry_run)
    if not damaged:
        return result
    copies = _copies(index, entry, {checksums[u] for u in damaged if u in checksums}, set(damaged))
    stores = _stores_of(index)
    for url, was in damaged.items():
        fix = ShardRepair(url=url, was=was)
        result.shards.append(fix)
        sha = checksums.get(url)
        store = next((s for s in stores if s.owns(url)), None)
        if sha is None:
            fix.note = "no recorded checksum, so no copy can be trusted; re-materialize the dataset"
            continue
        if store is None:
            fix.note = "not in a store of this index, so it is not repaired here; restore it where it lives"
            continue
        for source, owner in copies.get(sha, []):
            spool = _checked_copy(index, source, owner, sha)
            if spool is None:
                continue
            with spool:
                if not dry_run:
                    try:
                        store.restore(url, spool)
                    except AtdataError as exc:
                        fix.note = f"could not write the good copy from {source}: {exc}"
                        break
                    after = verify_shards([url], checksums, opener=index.shard_opener(entry))
                    if after.get(url) != "ok":
                        fix.note = f"restored from {source} but it verifies as {after.get(url)!r}"
                        break
            fix.restored_from = source
            break
        else:
            fix.note = _hint(entry)
    return result
