"""Settings and entry resolution for the IO manager and the asset checks.

Asset, output and input metadata (``atdata/*`` keys, ``allow_missing_partitions``) are
parsed once, with typed errors, into frozen :class:`OutputSettings` /
:class:`InputSettings`. Entry resolution finds the exact index entry a materialization
recorded (its ``atdata/cid`` event metadata) and only falls back to the dataset name's
latest entry when no materialization recorded one; any failure of the recorded-CID
lookup surfaces as an error, never as a silent switch to "latest".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import dagster as dg

from .errors import ConfigurationError, ConfigurationTypeError, InvalidRefError, NotFoundError
from .naming import dataset_name

if TYPE_CHECKING:  # pragma: no cover
    from .index.entry import LocalDatasetEntry
    from .index.index import Index

__all__ = [
    "CID_METADATA_KEY",
    "InputSettings",
    "OutputSettings",
    "WriteDefaults",
    "asset_settings",
    "meta_value",
    "positive_int",
    "recorded_cids",
    "resolve_entry",
]

#: the materialization metadata key holding the entry CID the IO manager wrote
CID_METADATA_KEY = "atdata/cid"
#: storage ids fetched per event-log query when resolving many partitions
_FETCH_CHUNK = 500


def meta_value(value: Any) -> Any:
    """The plain value of a Dagster metadata value (other values unchanged)."""
    return value.value if isinstance(value, dg.MetadataValue) else value


def _where(asset_key: dg.AssetKey) -> str:
    return f"asset {asset_key.to_user_string()!r}"


def positive_int(where: str, label: str, value: Any) -> Optional[int]:
    """``value`` if it is ``None`` or an int >= 1, else :class:`ConfigurationError` naming ``label``."""
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ConfigurationError(f"{where}: {label} must be a positive integer or null, got {value!r}")
    return value


@dataclass(frozen=True)
class WriteDefaults:
    """Write settings an asset's ``atdata/*`` metadata can override (the IO manager's config)."""

    repo: str = "local"
    maxcount: Optional[int] = 10000
    maxsize: Optional[int] = None
    manifest: bool = False


@dataclass(frozen=True)
class OutputSettings:
    """How one asset's datasets are named and written, parsed once from its definition metadata.

    ``name`` (``atdata/name``) replaces the asset-key path in the dataset name; ``repo``
    (``atdata/repo``) is the repository written to; ``maxcount`` / ``maxsize`` /
    ``manifest`` are passed to the shard writer; ``promote`` (``atdata/promote``) marks
    the entries for the promotion sensor; ``allow_empty`` (``atdata/allow_empty``) lets
    an output with no samples be stored as an empty dataset instead of failing; ``copy``
    (``atdata/copy``) copies a returned ``Dataset``'s shards into the repository's store
    instead of referencing them where they are (zero-copy, the default when every shard
    has a recorded checksum). ``reshard`` is set when the asset itself gives
    ``atdata/maxcount`` or ``atdata/maxsize``: a returned ``Dataset`` is then re-written
    with that shard size, since a reference would keep its parent's shards.
    """

    asset_key: dg.AssetKey
    name: Optional[str]
    repo: str
    maxcount: Optional[int]
    maxsize: Optional[int]
    manifest: bool
    promote: bool
    allow_empty: bool = False
    copy: bool = False
    reshard: bool = False

    @classmethod
    def parse(
        cls, metadata: Mapping[str, Any] | None, asset_key: dg.AssetKey, defaults: WriteDefaults = WriteDefaults(),
    ) -> "OutputSettings":
        """The settings of ``asset_key``: its ``atdata/*`` definition metadata over ``defaults``.

        Raises :class:`ConfigurationError` naming the asset and the key for a value of
        the wrong kind (a non-string name, a non-positive ``maxcount``, an empty repo).
        """
        m = {k: meta_value(v) for k, v in (metadata or {}).items()}
        where = _where(asset_key)
        name = m.get("atdata/name")
        if name is not None and not isinstance(name, str):
            raise ConfigurationError(f"{where}: 'atdata/name' must be a string, got {name!r}")
        repo = m.get("atdata/repo") or defaults.repo
        if not isinstance(repo, str) or not repo:
            raise ConfigurationError(f"{where}: 'atdata/repo' must be a repository name, got {repo!r}")
        return cls(
            asset_key=asset_key,
            name=name,
            repo=repo,
            maxcount=positive_int(where, "'atdata/maxcount'", m.get("atdata/maxcount", defaults.maxcount)),
            maxsize=positive_int(where, "'atdata/maxsize'", m.get("atdata/maxsize", defaults.maxsize)),
            manifest=bool(m.get("atdata/manifest", defaults.manifest)),
            promote=bool(m.get("atdata/promote", False)),
            allow_empty=_flag(where, "atdata/allow_empty", m.get("atdata/allow_empty", False)),
            copy=_flag(where, "atdata/copy", m.get("atdata/copy", False)),
            reshard="atdata/maxcount" in m or "atdata/maxsize" in m,
        )

    def write_options(self) -> dict[str, Any]:
        """Keyword arguments for ``Index.write`` / ``Index.insert_dataset`` (``maxcount`` left out when unset)."""
        opts: dict[str, Any] = {"maxsize": self.maxsize, "manifest": self.manifest}
        if self.maxcount is not None:
            opts["maxcount"] = self.maxcount
        return opts

    def dataset_names(self, index: "Index", partition: str | None) -> tuple[str, str]:
        """(bare name, ``repo/name``) of a partition's dataset; the repository must be mounted."""
        if self.repo not in index.repos:
            raise ConfigurationError(
                f"{_where(self.asset_key)}: repository {self.repo!r} is not mounted; "
                f"configured repositories: {sorted(index.repos)} (AtdataIndexResource.repos)"
            )
        bare = dataset_name(self.asset_key, partition, base=self.name)
        return bare, f"{self.repo}/{bare}"


#: The ``atdata/*`` definition-metadata keys an asset stored by the IO manager may set.
OUTPUT_METADATA_KEYS = frozenset({
    "atdata/name", "atdata/repo", "atdata/maxcount", "atdata/maxsize", "atdata/manifest", "atdata/promote",
    "atdata/allow_empty", "atdata/no_dataset", "atdata/copy",
})


def validate_output_metadata(metadata: Mapping[str, Any] | None, asset: str | dg.AssetKey) -> OutputSettings:
    """Check an asset's ``atdata/*`` definition metadata when the definitions load.

    Raises :class:`ConfigurationError` naming the asset for an unknown ``atdata/...`` key
    (a typo would otherwise be ignored) and for a value of the wrong kind
    (``atdata/maxcount="ten"``). The repository name is checked when the asset runs,
    against the index resource it is given.
    """
    key = asset if isinstance(asset, dg.AssetKey) else dg.AssetKey.from_user_string(asset)
    unknown = sorted(k for k in (metadata or {}) if k.startswith("atdata/") and k not in OUTPUT_METADATA_KEYS)
    if unknown:
        raise ConfigurationError(
            f"{_where(key)}: unknown metadata key(s) {unknown}; the IO manager reads {sorted(OUTPUT_METADATA_KEYS)}"
        )
    return OutputSettings.parse(metadata, key)


def _flag(where: str, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigurationTypeError(f"{where}: '{key}' must be true or false, got {value!r} ({type(value).__name__})")
    return value


def asset_settings(
    metadata: Mapping[str, Any] | None, asset_key: dg.AssetKey, defaults: WriteDefaults = WriteDefaults(),
) -> OutputSettings:
    """Write settings of an asset: :meth:`OutputSettings.parse` (kept for existing callers)."""
    return OutputSettings.parse(metadata, asset_key, defaults)


@dataclass(frozen=True)
class InputSettings:
    """How one asset input is loaded, parsed once from its ``AssetIn`` metadata.

    ``allow_missing_partitions`` lets a fan-in over several upstream partitions skip
    the ones never materialized instead of failing. ``columns`` (the convention of the
    deltalake, iceberg, duckdb and polars IO managers) loads a dataset that decodes only
    those fields.
    """

    allow_missing_partitions: bool = False
    columns: Optional[tuple[str, ...]] = None

    @classmethod
    def parse(cls, metadata: Mapping[str, Any] | None, asset_key: dg.AssetKey) -> "InputSettings":
        """The settings of an input of ``asset_key`` (:class:`ConfigurationTypeError` for a non-bool flag)."""
        m = {k: meta_value(v) for k, v in (metadata or {}).items()}
        allow = m.get("allow_missing_partitions", False)
        if not isinstance(allow, bool):
            raise ConfigurationTypeError(
                f"input from {_where(asset_key)}: 'allow_missing_partitions' must be true or false, "
                f"got {allow!r} ({type(allow).__name__})"
            )
        columns = m.get("columns")
        if columns is not None and (
            isinstance(columns, str) or not isinstance(columns, (list, tuple)) or not columns
            or not all(isinstance(c, str) and c for c in columns)
        ):
            raise ConfigurationTypeError(
                f"input from {_where(asset_key)}: 'columns' must be a non-empty list of field names, got {columns!r}"
            )
        return cls(allow_missing_partitions=allow, columns=None if columns is None else tuple(columns))


# --------------------------------------------------------------------------- entry resolution
def _recorded_cid(metadata: Mapping[str, Any], asset_key: dg.AssetKey, partition: str | None) -> str | None:
    """The ``atdata/cid`` of one materialization event; ``None`` when it has none (another IO manager)."""
    if CID_METADATA_KEY not in metadata:
        return None
    cid = meta_value(metadata[CID_METADATA_KEY])
    if not isinstance(cid, str) or not cid:
        raise InvalidRefError(
            f"{_where(asset_key)}" + (f" partition {partition!r}" if partition is not None else "")
            + f": its latest materialization recorded '{CID_METADATA_KEY}' = {cid!r} ({type(cid).__name__}), "
            "which is not an index entry CID; re-materialize the asset so the exact entry can be loaded"
        )
    return cid


def recorded_cids(
    instance: dg.DagsterInstance | None, key: dg.AssetKey, partitions: Sequence[str | None] | None,
) -> dict[str | None, str]:
    """partition -> ``atdata/cid`` of its latest materialization event in ``instance``.

    ``partitions=[None]`` asks for the unpartitioned asset (key ``None``), ``None`` for
    every partition ever materialized. Events without ``atdata/cid`` (another IO
    manager) are left out; a recorded value that is not a CID raises
    :class:`InvalidRefError`. ``instance=None`` (a context built without one) records
    nothing.
    """
    if instance is None:
        return {}
    out: dict[str | None, str] = {}
    if partitions is not None and list(partitions) == [None]:
        event = instance.get_latest_materialization_event(key)
        mat = event.asset_materialization if event is not None else None
        if mat is not None and mat.partition is None:
            cid = _recorded_cid(mat.metadata, key, None)
            if cid is not None:
                out[None] = cid
        return out
    wanted = None if partitions is None else {p for p in partitions if p is not None}
    storage_ids = instance.get_latest_storage_id_by_partition(key, dg.DagsterEventType.ASSET_MATERIALIZATION, wanted)
    ids = sorted(storage_ids.values())
    for i in range(0, len(ids), _FETCH_CHUNK):
        chunk = ids[i : i + _FETCH_CHUNK]
        result = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, storage_ids=chunk), limit=len(chunk)
        )
        for record in result.records:
            mat = record.asset_materialization
            if mat is None or mat.partition is None:
                continue
            cid = _recorded_cid(mat.metadata, key, mat.partition)
            if cid is not None:
                out[mat.partition] = cid
    return out


def resolve_entry(
    index: "Index", settings: OutputSettings, partition: str | None, cid: str | None, *, where: str = "the index",
) -> Optional["LocalDatasetEntry"]:
    """The entry with ``cid`` (recorded by the materialization), else the latest under the asset's name.

    ``None`` when no CID was recorded and the name has no entry. A recorded CID missing
    from the index is a :class:`NotFoundError`, and any other failure of its lookup
    (provider down, corrupt row) propagates: never silently replaced by whatever the
    name points at now.
    """
    if cid:
        try:
            return index.get_entry(cid)
        except NotFoundError:
            raise NotFoundError(
                f"{_where(settings.asset_key)}"
                + (f" partition {partition!r}" if partition is not None else "")
                + f" was materialized as index entry {cid}, which {where} does not hold; "
                "check the index configuration or re-materialize it"
            ) from None
    _, full = settings.dataset_names(index, partition)
    try:
        return index.get_dataset(full)
    except NotFoundError:
        return None
