"""One exception hierarchy for the whole package.

Every error raised on bad input derives from :class:`AtdataError`. Each one also
derives from the builtin exception that the seed API documents for that situation
(``KeyError`` for a missing entry, ``ValueError`` for a malformed ref, ``TypeError``
for an unsupported field type), so code written against atdata keeps working.
Messages name the dataset, field, shard or URL and say how to fix the problem.
"""

from __future__ import annotations


import tarfile
from typing import Any, Iterable


class AtdataError(Exception):
    """Base class of every error this package raises on purpose."""


class NotFoundError(AtdataError, KeyError):
    """A dataset entry, schema, label or repository does not exist."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DataFilesNotFoundError(NotFoundError, FileNotFoundError):
    """``load_dataset`` found no shards at a location (an empty directory, a glob matching nothing).

    Also a ``FileNotFoundError``, which is what atdata raises.
    """


class UnknownSplitError(NotFoundError, ValueError):
    """``load_dataset(..., split=...)`` named a split the location does not have.

    Also a ``ValueError``, which is what atdata raises.
    """


class PartialFailureError(AtdataError):
    """Some shards failed in ``Dataset.process_shards`` (atdata's name and attributes).

    ``succeeded_shards``, ``failed_shards``, ``errors`` (shard -> exception) and
    ``results`` (shard -> result of the ones that succeeded): retry with
    ``process_shards(fn, shards=err.failed_shards)``.
    """

    def __init__(self, succeeded_shards: list[str], failed_shards: list[str], errors: dict[str, Exception],
                 results: dict[str, Any]) -> None:
        self.succeeded_shards = succeeded_shards
        self.failed_shards = failed_shards
        self.errors = errors
        self.results = results
        first = failed_shards[0] if failed_shards else "?"
        super().__init__(
            f"{len(failed_shards)} of {len(failed_shards) + len(succeeded_shards)} shard(s) failed (first: {first}: "
            f"{type(errors.get(first)).__name__}: {errors.get(first)}); retry them with "
            "process_shards(fn, shards=err.failed_shards)"
        )

    def __reduce__(self) -> Any:
        return (type(self), (self.succeeded_shards, self.failed_shards, self.errors, self.results))


class LensNotFoundError(AtdataError, ValueError):
    """No lens (registered chain, or structural) leads from one sample type to another (atdata's name)."""


class InvalidNameError(AtdataError, ValueError):
    """A dataset name, partition key, schema name or field name is not allowed."""


class InvalidRefError(AtdataError, ValueError):
    """A schema ref, dataset ref or AT URI is malformed."""


class SampleError(AtdataError, ValueError):
    """A sample cannot be serialized: not packable, or a value does not match its field."""


class FieldMismatchError(SampleError, TypeError):
    """Sample data and its type disagree: a required field is missing or a key has no field.

    Also a ``TypeError``, which is what atdata raises when ``cls(**data)`` fails.
    """


class UnsupportedTypeError(AtdataError, TypeError):
    """A sample class uses a field type that cannot be described by a schema."""


class NotPackableError(AtdataError, TypeError):
    """An object or class does not satisfy the Packable protocol."""


class SchemaError(AtdataError, ValueError):
    """A schema record is malformed, unsafe or of an unsupported version."""


class EmptyDatasetError(AtdataError, ValueError):
    """A write was given no samples."""


class ShardError(AtdataError, ValueError):
    """A shard is corrupt, truncated, hostile or does not decode as its sample type."""


class DecodeError(ShardError):
    """A sample payload (msgpack or ndarray bytes) is malformed."""


class ShardNotFoundError(ShardError, FileNotFoundError):
    """A shard does not exist (moved, deleted, garbage-collected).

    Also a ``FileNotFoundError``, which is what atdata raises, so existing ``except``
    clauses keep catching it.
    """


class CorruptShardError(ShardError, tarfile.ReadError):
    """A shard is not a tar archive, or is truncated or malformed.

    Also a ``tarfile.ReadError``, which is what atdata (through ``tarfile``) raises for
    a file that is not a tar. atdata reads a truncated tar's complete members and stops
    without an error; this package raises instead, so no sample is silently lost.
    """


class PayloadTypeError(DecodeError, TypeError):
    """A sample payload is not a map of the sample type's fields (a msgpack list, say).

    Also a ``TypeError``, which is what atdata raises (``cls(**payload)`` fails).
    """


class ChecksumMismatchError(ShardError):
    """A shard's SHA-256 differs from the checksum recorded in the index entry."""


class StoreError(AtdataError):
    """A data store could not write or read a shard (disk full, permissions, S3 failure)."""


class ProviderError(AtdataError):
    """An index provider (SQLite, PostgreSQL, Redis) failed or could not be reached."""


class ConfigurationError(AtdataError, ValueError):
    """The Index, a repository, store or resource is configured inconsistently."""


class SameShardsError(ConfigurationError):
    """A dataset to index by reference is exactly an existing entry's shards.

    atdata's CID depends on the schema and the URLs only, so such a reference would be
    that entry itself; ``existing`` is it. Label the new name onto it
    (:meth:`~atdata_dagster.index.index.Index.label`) for a zero-copy alias, or copy the
    shards to get an entry of its own.
    """

    def __init__(self, message: str, existing: Any):
        super().__init__(message)
        #: the existing entry (a ``LocalDatasetEntry``)
        self.existing: Any = existing


class AtmosphereError(AtdataError):
    """An ATProto operation failed (authentication, PDS unavailable, bad record)."""


class AtmosphereUnavailableError(AtmosphereError, ValueError):
    """The operation needs an atmosphere backend (or an authenticated one) and none is configured."""


class RecordError(AtmosphereError, ValueError):
    """An ATProto record has the wrong ``$type`` or an unknown shape."""


__all__ = [
    "AtdataError",
    "AtmosphereError",
    "AtmosphereUnavailableError",
    "ChecksumMismatchError",
    "ConfigurationError",
    "CorruptShardError",
    "DataFilesNotFoundError",
    "DecodeError",
    "EmptyDatasetError",
    "FieldMismatchError",
    "InvalidNameError",
    "InvalidRefError",
    "LensNotFoundError",
    "NotFoundError",
    "NotPackableError",
    "PartialFailureError",
    "PayloadTypeError",
    "ProviderError",
    "RecordError",
    "SameShardsError",
    "SampleError",
    "SchemaError",
    "ShardError",
    "ShardNotFoundError",
    "StoreError",
    "UnknownSplitError",
    "UnsupportedTypeError",
]


class ConfigurationTypeError(AtdataError, TypeError):
    """A configuration value has the wrong type (e.g. a repository that is not a Repository)."""


__all__.append("ConfigurationTypeError")


# -- atmosphere (ATProto) details; appended by the atmosphere layer ----------------------


class AtmosphereAuthError(AtmosphereError):
    """Logging in to a PDS failed (wrong handle or app password, or the account is gone)."""


class AtmosphereConnectionError(AtmosphereError):
    """A PDS, PLC directory or blob host could not be reached (refused, DNS, timeout)."""


class AtmosphereRateLimitError(AtmosphereError):
    """A PDS answered 429; ``retry_after`` is the number of seconds to wait (or None)."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class AtmosphereNotFoundError(NotFoundError, AtmosphereError):
    """A handle, DID, record, label or blob does not exist on the atmosphere."""


class BlobTooLargeError(AtmosphereError, ValueError):
    """A shard is larger than the per-blob or per-dataset limit of an atmosphere publish."""


class AtmosphereLimitError(AtmosphereError):
    """A read from the atmosphere went past a budget (pages, records, time, bytes) or was redirected to another host."""


class PartialPublishError(AtmosphereError):
    """A publish stopped after its entry record was created (``entry_uri``); re-running reuses it."""

    def __init__(self, message: str, entry_uri: str | None = None):
        super().__init__(message)
        self.entry_uri = entry_uri


__all__ += [
    "AtmosphereAuthError",
    "AtmosphereConnectionError",
    "AtmosphereLimitError",
    "AtmosphereNotFoundError",
    "AtmosphereRateLimitError",
    "BlobTooLargeError",
    "PartialPublishError",
]


# -- index entries; appended by the entry layer --------------------------------------------


class CorruptEntryError(AtdataError, ValueError):
    """An index entry's stored metadata has the wrong shape (``stats``, ``checksums`` or
    ``manifests`` of the wrong type, e.g. written by another tool).

    Raised lazily, when that part of that entry is used, so listing and verifying the
    other entries keeps working. ``name`` and ``cid`` identify the entry, ``field`` the key.
    """

    def __init__(self, message: str, *, name: str | None = None, cid: str | None = None, field: str | None = None):
        super().__init__(message)
        self.name, self.cid, self.field = name, cid, field


__all__.append("CorruptEntryError")


# -- garbage collection ---------------------------------------------------------------------


class GcRefusedError(AtdataError):
    """``gc`` cannot prove that it owns a store or that nothing else references its shards.

    The message names the reason (the index did not exist, has no entries, the store
    belongs to another index or is atdata's shared default root) and ``--force``
    (``force=True``), which skips these ownership checks but never the reference checks.
    """


__all__.append("GcRefusedError")




# -- configuration mistakes that fail loudly ---------------------------------------------


class InvalidRepositoryNameError(InvalidNameError, ConfigurationError):
    """A named repository's mount name is not allowed (see ``validate_repository_name``).

    Both an :class:`InvalidNameError` and a :class:`ConfigurationError`: it is a name, given
    in configuration.
    """


__all__.append("InvalidRepositoryNameError")


class NoDatasetReturnedError(AtdataError, TypeError):
    """An asset stored by the atdata IO manager returned ``None``: nothing was written.

    Usually a forgotten ``return``. Return the samples (a list, generator or
    ``Dataset``), ``dg.Output(gen)`` from a generator function, or mark an asset that
    really produces no dataset with the definition metadata ``atdata/no_dataset: True``.
    """


__all__.append("NoDatasetReturnedError")


class UnknownOptionError(ConfigurationError, TypeError):
    """A call got a keyword it does not accept (or would silently ignore).

    Also a ``TypeError``, which is what Python raises for an unexpected keyword.
    ``options`` holds the offending keywords and ``accepted`` the ones the call takes.
    """

    def __init__(self, message: str, options: tuple[str, ...] = (), accepted: tuple[str, ...] = ()):
        super().__init__(message)
        self.options = options
        self.accepted = accepted

    @classmethod
    def for_call(cls, call: str, options: Iterable[str], accepted: Iterable[str], hint: str = "") -> UnknownOptionError:
        """The error for ``call`` given ``options`` it does not take: names them and lists ``accepted``."""
        names = tuple(sorted(options))
        allowed = tuple(accepted)
        which = ", ".join(f"{n}=" for n in names)
        message = (
            f"{call} got unknown keyword argument{'s' if len(names) > 1 else ''} {which}; "
            f"it accepts {', '.join(f'{a}=' for a in allowed)}."
        )
        return cls(f"{message} {hint}".strip(), names, allowed)


__all__.append("UnknownOptionError")


class LoaderStateError(AtdataError, ValueError):
    """A training loader's resume state does not belong to this dataset version or loader configuration."""


__all__.append("LoaderStateError")
