"""The dataset ``Index``: the seed API over repositories, stores and the atmosphere.

One ``Index`` holds a built-in ``local`` repository (SQLite by default), any number of
named repositories (each an index provider plus an optional data store) and an
optional atmosphere (ATProto) backend. Names route to them as atdata routes them
(see :mod:`atdata_dagster.index.names`).

Writes follow "write once, commit last": shards stream straight into their final
store under content-derived names, and the entry (with its label) is committed in one
provider transaction only after every shard is durable.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import tempfile
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator, Mapping, TypeVar, cast

from ..atmosphere import AtmosphereBackend, AtmosphereClient, shard_sources_for
from ..dataset import Dataset
from ..errors import (
    AtdataError,
    AtmosphereUnavailableError,
    ConfigurationError,
    ConfigurationTypeError,
    EmptyDatasetError,
    InvalidNameError,
    InvalidRefError,
    SameShardsError,
    NotFoundError,
    NotPackableError,
    SchemaError,
    UnknownOptionError,
)
from ..samples.packable import DictSample, ensure_packable_type
from ..samples.schema import (
    build_schema_record,
    fields_signature,
    make_schema_ref,
    next_version,
    parse_schema_ref,
    schema_json,
    type_from_record,
)
from ..lenses import lens_from_record, lens_to_json
from ..samples.stubs import StubManager
from ..shards.manifest import manifest_url_for
from ..shards.reader import verify_shards
from ..shards.writer import ShardWriter, write_all
from ..stores.base import DataStore, ShardWriteResult
from ..stores.disk import LocalDiskStore
from ..stores.http import HttpOpener
from ..stores.openers import RoutingOpener, store_opener
from ..stores.s3 import AnonymousS3Opener, S3DataStore, default_chain_opener
from .entry import LabelRecord, LocalDatasetEntry, LocalSchemaRecord
from .identity import claim_store
from .names import ATMOSPHERE, LOCAL, resolve_ref, split_repo_prefix, validate_dataset_name, validate_repository_name
from .providers import create_provider
from .providers.base import IndexProvider

log = logging.getLogger("atdata_dagster.index")


__all__ = ["Index", "Repository", "create_repository"]

T = TypeVar("T")


class _AtmosphereDefault:
    def __repr__(self) -> str:
        return "<anonymous atmosphere>"


_ATMOSPHERE_DEFAULT: Any = _AtmosphereDefault()


@dataclass
class Repository:
    """A named repository: an index provider and an optional data store."""

    provider: IndexProvider
    data_store: DataStore | None = None


def create_repository(provider: str | IndexProvider = "sqlite", *, data_store: DataStore | None = None, **kwargs) -> Repository:
    """Build a :class:`Repository` from a provider name (``sqlite``/``postgres``/``redis``) or object."""
    if isinstance(provider, str):
        provider = create_provider(provider, **kwargs)
    return Repository(provider=provider, data_store=data_store)


_INDEX_OPTIONS = ("provider", "path", "dsn", "redis", "data_store", "repos", "atmosphere", "auto_stubs", "stub_dir",
                  "allow_credentials_for")
_PROVIDER_OPTION = {"sqlite": "path", "postgres": "dsn", "postgresql": "dsn", "redis": "redis"}
_INSERT_OPTIONS = ("name", "schema_ref", "metadata", "prefix", "data_store", "maxcount", "maxsize", "manifest",
                   "cache_local", "description", "tags", "license")


def _reject_ignored(name: str, options: dict[str, Any], why: str) -> None:
    """Raise :class:`UnknownOptionError` if any of ``options`` is set: this route would ignore it."""
    given = sorted(k for k, v in options.items() if v is not None)
    if given:
        raise UnknownOptionError(
            f"insert_dataset(name={name!r}) would ignore {', '.join(f'{k}=' for k in given)}: {why}. Drop "
            f"{'them' if len(given) > 1 else 'it'}.",
            tuple(given), _INSERT_OPTIONS,
        )


def _local_provider(provider: Any, *, path: Any, dsn: Any, redis: Any) -> IndexProvider:
    """The ``local`` repository's provider from ``Index()``'s arguments; a
    :class:`ConfigurationError` for an argument the chosen provider would ignore."""
    given = [k for k, v in (("path", path), ("dsn", dsn), ("redis", redis)) if v is not None]
    if isinstance(provider, IndexProvider):
        if given:
            raise ConfigurationError(
                f"Index(provider=<{type(provider).__name__}>) got {', '.join(f'{k}=' for k in given)} too, which "
                "it would ignore: the provider object already says where the index lives; drop them"
            )
        return provider
    if provider is None:
        if len(given) > 1:
            raise ConfigurationError(
                f"Index() got {' and '.join(f'{k}=' for k in given)}: pass only one of path= (SQLite), "
                "dsn= (PostgreSQL) or redis= (Redis)"
            )
        kind = {"dsn": "postgres", "redis": "redis"}.get(given[0], "sqlite") if given else "sqlite"
    elif isinstance(provider, str):
        kind = provider.strip().lower()
        if kind not in _PROVIDER_OPTION:
            return create_provider(provider)  # raises: unknown provider name, with the known ones
        ignored = [k for k in given if k != _PROVIDER_OPTION[kind]]
        if ignored:
            raise ConfigurationError(
                f"Index(provider={provider!r}) takes {_PROVIDER_OPTION[kind]}=, not "
                f"{', '.join(f'{k}=' for k in ignored)} (it would be ignored); drop it or pick the matching provider"
            )
    else:
        raise ConfigurationTypeError(
            f"provider must be an IndexProvider or one of 'sqlite', 'postgres', 'redis'; got {type(provider).__name__}"
        )
    if kind == "redis":
        return _redis_provider(redis)
    if kind in ("postgres", "postgresql"):
        return create_provider("postgres", dsn=dsn)
    return create_provider("sqlite", path=path)


def _redis_provider(redis: Any) -> IndexProvider:
    """A Redis provider from ``Index(redis=...)``: a connection, a URL or a mapping of options."""
    if isinstance(redis, str):
        return create_provider("redis", url=redis)
    if isinstance(redis, Mapping):
        options = dict(redis)
        try:
            return create_provider("redis", **options)
        except TypeError as e:  # redis.Redis(**options) rejected a keyword (its message names only the key)
            if isinstance(e, AtdataError):
                raise
            raise UnknownOptionError(
                f"Index(redis={{...}}): redis.Redis does not accept one of the options {sorted(options)}: {e}. "
                "Use redis.Redis keyword arguments (host, port, db, username, password, ...) or 'url'."
            ) from None
    if redis is None or hasattr(redis, "connection_pool"):
        return create_provider("redis", redis=redis)
    raise ConfigurationTypeError(
        f"redis= must be a redis.Redis connection, a 'redis://...' URL or a mapping of redis.Redis options; "
        f"got {type(redis).__name__}"
    )



def _deprecated(message: str) -> None:
    """A seed-API name atdata 0.7 deprecates: the same ``DeprecationWarning``, pointing at the caller."""
    warnings.warn(message, DeprecationWarning, stacklevel=3)


_LENS_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+\-]{0,127}")


def _parse_lens_ref(ref: str) -> tuple[str, str]:
    prefix = "atdata://local/lens/"
    body = ref[len(prefix):] if isinstance(ref, str) and ref.startswith(prefix) else None
    if not body or "@" not in body:
        raise InvalidRefError(f"invalid lens ref {ref!r}: expected 'atdata://local/lens/{{name}}@{{version}}'")
    name, version = body.rsplit("@", 1)
    if not name or not version:
        raise InvalidRefError(f"invalid lens ref {ref!r}: expected 'atdata://local/lens/{{name}}@{{version}}'")
    return name, version


class SchemaNamespace:
    """``index.types``: the schema types :meth:`Index.get_schema_type` loaded, as attributes.

    Supports attribute access, iteration over names, ``len()``, ``in`` and ``get`` (as
    atdata 0.7's); an unknown name says to load it first.
    """

    def __init__(self) -> None:
        self._types: dict[str, type] = {}

    def _register(self, name: str, cls: type) -> None:
        self._types[name] = cls

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._types[name]
        except KeyError:
            raise AttributeError(
                f"schema {name!r} is not loaded; call index.get_schema_type(ref) first "
                f"(loaded: {sorted(self._types)})"
            ) from None

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "_types":
            object.__setattr__(self, name, value)
        else:
            self._types[name] = value

    def __dir__(self) -> list[str]:
        return sorted(self._types)

    def __iter__(self) -> Iterator[str]:
        return iter(self._types)

    def __len__(self) -> int:
        return len(self._types)

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def get(self, name: str, default: Any = None) -> Any:
        """The type named ``name``, or ``default``."""
        return self._types.get(name, default)

    def __repr__(self) -> str:
        return f"SchemaNamespace({', '.join(sorted(self._types)) or 'empty'})"

class Index:
    """Unified index of datasets across repositories and the atmosphere.

    ``Index()`` is the embedded default: SQLite at ``~/.atdata/index.db`` and shards
    under ``~/.atdata/data``. ``Index(path=...)`` picks another SQLite file,
    ``Index(dsn=...)`` a PostgreSQL index (``postgresql://`` URL or libpq key/value DSN)
    and ``Index(redis=...)`` a Redis index: a ``redis.Redis`` connection, a
    ``redis://`` URL, or a mapping of ``redis.Redis`` options
    (``redis={"host": "h", "port": 6379, "password": ...}``, ``"url"`` allowed too).
    ``provider=`` takes an :class:`IndexProvider` or a name (``"sqlite"``,
    ``"postgres"``, ``"redis"``) used with ``path=`` / ``dsn=`` / ``redis=``.
    ``repos={"lab": Repository(...)}`` mounts named repositories; ``atmosphere=``
    takes an authenticated client for publishing (the default is anonymous and
    read-only, and makes no network call until needed; ``None`` disables it).

    Configuration mistakes fail loudly with a :class:`ConfigurationError`: an unknown
    keyword (:class:`UnknownOptionError`, naming it; atdata passes unknown keywords to
    ``redis.Redis(**kwargs)`` and so silently picks Redis), or ``path=`` / ``dsn=`` /
    ``redis=`` that the chosen provider would ignore.

    Shards named by records read from the atmosphere (foreign records) are read
    anonymously; ``allow_credentials_for=["bucket", ...]`` lets the stores' credentials
    be used for those S3 buckets too (see SECURITY.md, "Foreign records").
    """

    def __init__(
        self,
        provider: IndexProvider | str | None = None,
        *,
        path: str | None = None,
        dsn: str | None = None,
        redis: Any = None,
        data_store: DataStore | None = None,
        repos: dict[str, Repository] | None = None,
        atmosphere: Any = _ATMOSPHERE_DEFAULT,
        auto_stubs: bool = False,
        stub_dir: str | None = None,
        allow_credentials_for: Iterable[str] = (),
        **unknown: Any,
    ) -> None:
        if unknown:
            raise UnknownOptionError.for_call(
                "Index()", unknown, _INDEX_OPTIONS,
                hint="Redis connection options go in one mapping: Index(redis={'host': ..., 'port': ..., "
                "'password': ...}), or pass a redis.Redis connection or a 'redis://...' URL as redis=.",
            )
        local_provider = _local_provider(provider, path=path, dsn=dsn, redis=redis)

        self._repos: dict[str, Repository] = {LOCAL: Repository(local_provider, data_store)}
        for key, repo in (repos or {}).items():
            validate_repository_name(key, where="Index(repos=...):")
            if isinstance(repo, IndexProvider):
                repo = Repository(repo)
            if not isinstance(repo, Repository):
                raise ConfigurationTypeError(
                    f"repos[{key!r}] must be a Repository(provider, data_store), got {type(repo).__name__}"
                )
            self._repos[key] = repo

        if isinstance(allow_credentials_for, str) or not all(
            isinstance(b, str) and b and "/" not in b for b in allow_credentials_for
        ):
            raise ConfigurationTypeError(
                f"allow_credentials_for must be a list of S3 bucket names, got {allow_credentials_for!r}; "
                "e.g. allow_credentials_for=['my-datasets']"
            )
        #: S3 buckets whose store credentials may be used for shards named by foreign (atmosphere) records.
        self.allow_credentials_for: frozenset[str] = frozenset(allow_credentials_for)
        self._atmosphere_arg = atmosphere
        self._atmosphere: Any = None
        self._atmosphere_lock = threading.Lock()

        self._stubs = None
        if auto_stubs or stub_dir is not None:
            self._stubs = StubManager(stub_dir)
        #: schema types loaded by :meth:`get_schema_type`, as attributes (``index.types.MySample``)
        self.types = SchemaNamespace()

    # ------------------------------------------------------------------ basics
    @property
    def provider(self) -> IndexProvider:
        """The provider of the built-in ``local`` repository."""
        return self._repos[LOCAL].provider

    @property
    def data_store(self) -> DataStore | None:
        """The data store of the ``local`` repository (``None`` until one is needed)."""
        return self._repos[LOCAL].data_store

    @property
    def repos(self) -> dict[str, Repository]:
        """All repositories by name, ``local`` included."""
        return dict(self._repos)

    def close(self) -> None:
        """Close every provider's connections."""
        for repo in self._repos.values():
            repo.provider.close()

    def __enter__(self) -> "Index":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        repos = ", ".join(f"{k}={r.provider.describe()}" for k, r in self._repos.items())
        return f"Index({repos})"

    def _repo(self, key: str) -> Repository:
        try:
            return self._repos[key]
        except KeyError:
            raise NotFoundError(
                f"Unknown repository {key!r}; mounted repositories: {sorted(self._repos)}"
            ) from None

    def _store_for(self, repo: Repository) -> DataStore:
        if repo.data_store is None:
            repo.data_store = LocalDiskStore()
        return repo.data_store

    # ------------------------------------------------------------- atmosphere
    @property
    def atmosphere(self):
        """The atmosphere backend, created on first use (``None`` when disabled)."""
        if self._atmosphere is None and self._atmosphere_arg is not None:
            with self._atmosphere_lock:
                if self._atmosphere is None:
                    self._atmosphere = self._make_atmosphere(self._atmosphere_arg)
        return self._atmosphere

    @staticmethod
    def _make_atmosphere(arg: Any):
        if arg is _ATMOSPHERE_DEFAULT:
            return AtmosphereBackend(AtmosphereClient())
        if isinstance(arg, AtmosphereBackend):
            return arg
        if isinstance(arg, AtmosphereClient):
            return AtmosphereBackend(arg)
        try:
            import atproto  # lazy: the atproto SDK loads only when an atmosphere is configured

            if isinstance(arg, atproto.Client):
                return AtmosphereBackend(AtmosphereClient.from_client(arg))
        except ImportError:  # pragma: no cover
            pass
        raise ConfigurationTypeError(
            f"atmosphere must be an atproto.Client, an AtmosphereClient, None or left out; got {type(arg).__name__}"
        )

    def _require_atmosphere(self, what: str):
        backend = self.atmosphere
        if backend is None:
            raise AtmosphereUnavailableError(
                f"{what} needs the atmosphere, but it is disabled (atmosphere=None); pass "
                "Index(atmosphere=AtmosphereClient(service_url, handle=..., password=...))"
            )
        return backend

    # ---------------------------------------------------------------- schemas
    def _schema_providers(self) -> list[IndexProvider]:
        return [r.provider for r in self._repos.values()]

    def publish_schema(self, sample_type: type, *, version: str | None = None, description: str | None = None) -> str:
        """Store the schema of a sample type; return ``atdata://local/schema/{Name}@{version}``.

        ``version=None`` bumps the patch of the latest stored version (or starts at
        ``1.0.0``). The record is stored in the local provider (where atdata looks for
        it) and in every mounted repository, so readers of a shared repository can
        decode its datasets.
        """
        ensure_packable_type(sample_type)
        name = sample_type.__name__
        if version is None:
            version = next_version(self.provider.schema_versions(name))
        record = build_schema_record(sample_type, version=version, description=description)
        self._store_schema(record, self._schema_providers())
        return make_schema_ref(name, version)

    @staticmethod
    def _store_schema(record: dict, providers: list[IndexProvider]) -> None:
        text = schema_json(record)
        for p in providers:
            p.put_schema(record["name"], record["version"], text)

    def _implicit_schema_ref(self, sample_type: type, repo: Repository) -> str:
        """The ref for writing ``sample_type`` without an explicit ``schema_ref``.

        atdata always uses ``@1.0.0`` and never refreshes it, so a changed class goes
        stale. We reuse the newest stored version whose fields match the class exactly,
        and otherwise publish the next version.
        """
        name = sample_type.__name__
        record = build_schema_record(sample_type, version="0.0.0")
        signature = fields_signature(record)
        providers = [self.provider] + ([repo.provider] if repo.provider is not self.provider else [])
        versions: list[str] = []
        for p in providers:
            versions.extend(v for v in p.schema_versions(name) if v not in versions)
        for v in sorted(versions, key=_version_key, reverse=True):
            try:
                stored = _load_schema_text(self._schema_json(name, v, providers), name, v)
            except NotFoundError:
                continue
            if fields_signature(stored) == signature:
                # make sure every provider that will hold the entry also holds the schema
                for p in providers:
                    try:
                        p.get_schema_json(name, v)
                    except NotFoundError:
                        self._store_schema(stored, [p])
                return make_schema_ref(name, v)
        version = next_version(versions)
        self._store_schema(build_schema_record(sample_type, version=version), providers)
        return make_schema_ref(name, version)

    def _schema_json(self, name: str, version: str, providers: list[IndexProvider] | None = None) -> str:
        for p in providers or self._schema_providers():
            try:
                return p.get_schema_json(name, version)
            except NotFoundError:
                continue
        raise NotFoundError(f"Schema not found: {name}@{version}; publish it with index.publish_schema({name}, version={version!r})")

    def get_schema(self, ref: str) -> dict:
        """The schema record for ``ref`` as a dict with ``$ref`` (AbstractIndex protocol).

        With ``auto_stubs``, as in atdata, reading a schema also writes its stub module.
        """
        record = self._schema_record(ref)
        if self._stubs is not None and not ref.startswith(("at://", "@")):
            self._stubs.ensure_stub(record, authority=_authority_of(record["$ref"]))
        return record

    def _schema_record(self, ref: str) -> dict:
        """The schema record for ``ref`` (no stub written: callers that want one make it themselves)."""
        if isinstance(ref, str) and ref.startswith(("at://", "@")):
            return self._require_atmosphere("resolving an atmosphere schema").get_schema(ref)
        name, version = parse_schema_ref(ref)
        record = _load_schema_text(self._schema_json(name, version), name, version)
        record["$ref"] = make_schema_ref(name, version)
        return record

    def get_schema_record(self, ref: str) -> LocalSchemaRecord:
        """The schema record for ``ref`` as a :class:`LocalSchemaRecord`."""
        return LocalSchemaRecord.from_dict(self.get_schema(ref))

    def list_schemas(self) -> list[dict]:
        """Every schema record (local provider first, then mounted repositories), each with ``$ref``."""
        seen: set[tuple[str, str]] = set()
        out = []
        for p in self._schema_providers():
            for name, version, text in p.iter_schemas():
                if (name, version) in seen:
                    continue
                seen.add((name, version))
                record = _load_schema_text(text, name, version)
                record["$ref"] = make_schema_ref(name, version)
                out.append(record)
        return out

    def get_schema_type(self, ref: str, *, register: bool = True) -> type:
        """The sample type of a stored schema (from a generated stub module with ``auto_stubs``).

        ``register`` (default, as atdata 0.7) also makes it ``index.types.<Name>``.
        """
        record = self._schema_record(ref)  # load_type writes the stub when it needs one
        if self._stubs is not None:
            cls = self._stubs.load_type(record, authority=_authority_of(record.get("$ref", ref)))
        else:
            cls = type_from_record(record)
        if register:
            self.types._register(cls.__name__, cls)
        return cls

    def decode_schema(self, ref: str) -> type:
        """Deprecated (atdata 0.7): use :meth:`get_schema_type` (``register=False`` is this)."""
        _deprecated("Index.decode_schema() is deprecated, use Index.get_schema_type() instead")
        return self.get_schema_type(ref, register=False)

    def decode_schema_as(self, ref: str, type_hint: type[T]) -> type[T]:
        """Deprecated (atdata 0.7): use :meth:`get_schema_type`; typed as ``type_hint`` for IDEs."""
        _deprecated("Index.decode_schema_as() is deprecated, use Index.get_schema_type() instead")
        return cast("type[T]", self.get_schema_type(ref, register=False))

    def load_schema(self, ref: str) -> type:
        """Deprecated (atdata 0.7): use :meth:`get_schema_type`, which registers by default."""
        _deprecated("Index.load_schema() is deprecated, use Index.get_schema_type() instead")
        return self.get_schema_type(ref, register=True)

    @property
    def stub_dir(self) -> Path | None:
        """Where stub modules are written (add it to your IDE's extra paths), or ``None`` without auto_stubs."""
        return self._stubs.stub_dir if self._stubs is not None else None

    @property
    def schemas(self) -> Iterator[LocalSchemaRecord]:
        """Every schema record, lazily (atdata's seed property; :meth:`list_schemas` gives dicts)."""
        for record in self.list_schemas():
            yield LocalSchemaRecord.from_dict(record)

    def get_import_path(self, ref: str) -> str | None:
        """Import path of the generated stub module (``local.MySample_1_0_0``), or ``None`` without auto_stubs."""
        if self._stubs is None:
            return None
        record = self._schema_record(ref)
        authority = _authority_of(record.get("$ref", ref))
        self._stubs.ensure_stub(record, authority=authority)
        return self._stubs.import_path(record["name"], record["version"], authority=authority)

    def clear_stubs(self) -> int:
        """Remove generated stub files; return how many were removed (0 without auto_stubs)."""
        return self._stubs.clear() if self._stubs is not None else 0

    # ---------------------------------------------------------------- lenses
    def store_lens(self, lens_obj: Any, *, name: str, version: str | None = None, description: str | None = None,
                   source_schema: str | None = None, view_schema: str | None = None) -> str:
        """Store a :class:`~atdata_dagster.lenses.Lens` in atdata's ``lenses`` table; return ``atdata://local/lens/{name}@{version}``.

        ``version=None`` bumps the patch of the latest stored version (or starts at
        ``1.0.0``). Importable getters/putters are stored as code references, others as
        field mappings where that is exact (:func:`~atdata_dagster.lenses.lens_to_json`).
        """
        if not isinstance(name, str) or not _LENS_PART.fullmatch(name):
            raise InvalidNameError(f"invalid lens name {name!r}: use letters, digits and . _ + - (no '/', '@' or spaces)")
        if version is None:
            version = next_version(self.provider.lens_versions(name))
        if not isinstance(version, str) or not _LENS_PART.fullmatch(version):
            raise InvalidNameError(f"invalid lens version {version!r}: use e.g. '1.0.0'")
        text = lens_to_json(lens_obj, name=name, version=version, description=description,
                            source_schema=source_schema, view_schema=view_schema)
        self.provider.put_lens(name, version, text)
        return f"atdata://local/lens/{name}@{version}"

    def get_lens(self, ref: str) -> dict:
        """The lens record for ``atdata://local/lens/{name}@{version}`` (with ``$ref``); ``KeyError`` if absent."""
        name, version = _parse_lens_ref(ref)
        record = json.loads(self.provider.get_lens_json(name, version))
        record["$ref"] = f"atdata://local/lens/{name}@{version}"
        return record

    def load_lens(self, ref: str, *, source_type: type | None = None, view_type: type | None = None) -> Any:
        """A working :class:`~atdata_dagster.lenses.Lens` rebuilt from its record (registered in the network)."""
        return lens_from_record(self.get_lens(ref), source_type=source_type, view_type=view_type)

    @property
    def lenses(self) -> Iterator[dict]:
        """Every lens record, lazily."""
        for name, version, text in self.provider.iter_lenses():
            record = json.loads(text)
            record["$ref"] = f"atdata://local/lens/{name}@{version}"
            yield record

    def list_lenses(self) -> list[dict]:
        """Every lens record."""
        return list(self.lenses)

    def find_lenses(self, source_schema: str, view_schema: str | None = None) -> list[dict]:
        """Lens records from ``source_schema`` (a schema name), to ``view_schema`` if given."""
        out = []
        for name, version, text in self.provider.find_lenses_by_schemas(source_schema, view_schema):
            record = json.loads(text)
            record["$ref"] = f"atdata://local/lens/{name}@{version}"
            out.append(record)
        return out

    # ---------------------------------------------------------------- entries
    def get_entry(self, cid: str) -> LocalDatasetEntry:
        """The entry with this CID (local repository first, then mounted ones)."""
        for repo in self._repos.values():
            try:
                return repo.provider.get_entry(cid)
            except NotFoundError:
                continue
        raise NotFoundError(f"no index entry with CID {cid!r}; list entries with index.list_entries()")

    def get_entry_by_name(self, name: str) -> LocalDatasetEntry:
        """The latest entry of the local repository with this exact name."""
        return self.provider.get_entry_by_name(name)

    def list_entries(self) -> list[LocalDatasetEntry]:
        """Every entry of the local repository."""
        return list(self.provider.iter_entries())

    @property
    def entries(self) -> Iterator[LocalDatasetEntry]:
        """Every entry of the local repository, lazily (atdata's seed property)."""
        yield from self.provider.iter_entries()

    @property
    def all_entries(self) -> list[LocalDatasetEntry]:
        """Every entry of the local repository as a list (atdata's seed property; :meth:`list_entries`)."""
        return self.list_entries()

    @property
    def datasets(self) -> Iterator[LocalDatasetEntry]:
        """Every entry of every mounted repository, lazily (the atmosphere's are not included)."""
        for repo in self._repos.values():
            yield from repo.provider.iter_entries()

    def list_datasets(self, repo: str | None = None) -> list[LocalDatasetEntry]:
        """Entries of ``repo`` (``local``, a mounted name, ``_atmosphere``), or of all repositories."""
        if repo is None:
            out: list[LocalDatasetEntry] = []
            for r in self._repos.values():
                out.extend(r.provider.iter_entries())
            return out
        if repo == ATMOSPHERE:
            backend = self.atmosphere
            return [] if backend is None else list(backend.list_datasets())
        return list(self._repo(repo).provider.iter_entries())

    def get_dataset(self, ref: str) -> LocalDatasetEntry:
        """The entry a name or ref points at: the latest label first, then the entry name.

        Accepts bare names (local), ``local/x``, ``@local/x``, ``lab/x`` and ``@lab/x``
        for mounted repositories, ``@handle/x`` and ``at://`` URIs for the atmosphere.
        """
        resolved = resolve_ref(ref, self._mounted())
        if resolved.is_atmosphere:
            backend = self._require_atmosphere(f"resolving {ref!r}")
            return backend.resolve(ref)
        provider = self._repo(resolved.backend).provider
        return self._lookup(provider, resolved.name, ref)

    @staticmethod
    def _lookup(provider: IndexProvider, name: str, ref: str) -> LocalDatasetEntry:
        try:
            return provider.resolve_name(name)
        except NotFoundError:
            raise NotFoundError(
                f"dataset {ref!r} not found in {provider.describe()}; list names with index.list_datasets()"
            ) from None

    def _mounted(self) -> frozenset[str]:
        return frozenset(k for k in self._repos if k != LOCAL)

    # ----------------------------------------------------------------- labels
    def label(self, name: str, cid: str, *, version: str | None = None, description: str | None = None, repo: str = LOCAL) -> None:
        """Point label ``name`` (optionally versioned) at an entry CID."""
        provider = self._repo(repo).provider
        provider.get_entry(cid)
        provider.put_label(LabelRecord(name=name, cid=cid, version=version or "", description=description))

    def get_label(self, name: str, version: str | None = None, *, repo: str = LOCAL) -> LabelRecord:
        """The label ``name`` at ``version`` (latest when ``None``)."""
        return self._repo(repo).provider.get_label(name, version)

    def list_labels(self, *, repo: str = LOCAL) -> list[LabelRecord]:
        """Every label of a repository."""
        return list(self._repo(repo).provider.iter_labels())

    # ----------------------------------------------------------------- writes
    def _commit(self, repo: Repository, entry: LocalDatasetEntry) -> LocalDatasetEntry:
        # Re-committing unchanged data (same CID) must not forget that it was published:
        # the provider carries the stored atmosphere record over inside its write transaction.
        label = LabelRecord(name=entry.name, cid=entry.cid, version="")
        repo.provider.put_entry(entry, label=label)
        try:
            return repo.provider.get_entry(entry.cid)
        except NotFoundError:  # pragma: no cover - provider just wrote it
            return entry

    def _route_write(self, name: str) -> tuple[str, Repository | None, str]:
        if not isinstance(name, str):
            validate_dataset_name(name)  # raises InvalidNameError naming the type
        resolved = resolve_ref(name, self._mounted()) if name.startswith(("@", "at://")) else None
        if resolved is not None and resolved.is_atmosphere:
            return ATMOSPHERE, None, name
        if resolved is not None:
            key, bare = resolved.backend, resolved.name
        else:
            key, bare = split_repo_prefix(name, self._mounted())
        validate_dataset_name(bare)
        return key, self._repo(key), bare

    def add_entry(self, ds: "Dataset", *, name: str, schema_ref: str | None = None, metadata: dict | None = None) -> LocalDatasetEntry:
        """Deprecated (atdata 0.7): use :meth:`insert_dataset`. Indexes the URLs as written, nothing copied."""
        _deprecated("Index.add_entry() is deprecated, use Index.insert_dataset()")
        validate_dataset_name(name)
        repo = self._repos[LOCAL]
        return self._index_urls(repo, ds, name=name, schema_ref=schema_ref, metadata=metadata)

    def _index_urls(self, repo: Repository, ds: "Dataset", *, name: str, schema_ref: str | None, metadata: dict | None) -> LocalDatasetEntry:
        if schema_ref is None:
            schema_ref = self._implicit_schema_ref(_dataset_sample_type(ds), repo)
        meta = dict(metadata if metadata is not None else (getattr(ds, "metadata", None) or {}))
        # the URLs as written, brace patterns unexpanded: what atdata records, so the CID is atdata's
        urls = list(getattr(ds, "urls_as_given", None) or ds.list_shards())
        entry = LocalDatasetEntry(name=name, schema_ref=schema_ref, data_urls=urls, metadata=meta or None)
        return self._commit(repo, entry)

    def reference_dataset(
        self, ds: "Dataset", *, name: str, schema_ref: str | None = None, metadata: dict | None = None,
    ) -> LocalDatasetEntry:
        """Index ``ds``'s shards where they already are: a zero-copy entry under ``name``.

        For datasets read from this index and derived from it (``Dataset.select_shards``,
        ``Dataset.concat``, an upstream input passed through): nothing is read or written;
        the entry keeps each shard's recorded SHA-256, sample count, size and manifest, and
        ``metadata["derived_from"]`` names the entries the shards come from. gc keeps a
        shard while any entry references it. Raises :class:`ConfigurationError` when a shard
        has no recorded checksum (bare URLs: copy them with :meth:`insert_dataset`).
        """
        key, repo, bare = self._route_write(name)
        if key == ATMOSPHERE:
            raise ConfigurationError(
                f"reference_dataset({name!r}): an atmosphere entry cannot reference local shards; use insert_dataset"
            )
        if getattr(ds, "is_transformed", False):
            raise ConfigurationError(
                f"reference_dataset({name!r}): the dataset is filtered, mapped or read through a lens, so its samples "
                "are not its shards; write it with insert_dataset(...) instead"
            )
        assert repo is not None
        specs = ds.shard_specs()
        unverified = [s.url for s in specs if not s.sha256]
        if unverified:
            raise ConfigurationError(
                f"reference_dataset({name!r}): {len(unverified)} shard(s) have no recorded checksum (first: "
                f"{unverified[0]}), so the entry could not be verified; reference datasets read from an index, or copy "
                "this one with insert_dataset(...)"
            )
        if schema_ref is None:
            schema_ref = self._implicit_schema_ref(_dataset_sample_type(ds), repo)
        source = ds.metadata if isinstance(ds.metadata, dict) else {}
        meta = dict(metadata or {})
        meta["checksums"] = {s.url: s.sha256 for s in specs}
        stats: dict[str, Any] = {
            "num_samples": sum(s.num_samples for s in specs), "num_shards": len(specs),
            "shard_samples": [s.num_samples for s in specs],
        }
        if all(isinstance(s.nbytes, int) for s in specs):
            stats["shard_bytes"] = [s.nbytes for s in specs]
            stats["total_bytes"] = sum(stats["shard_bytes"])
        meta["stats"] = stats
        wanted = {manifest_url_for(s.url) for s in specs}
        manifests = [m for m in source.get("manifests") or [] if isinstance(m, str) and m in wanted]
        if manifests:
            meta["manifests"] = manifests
        meta["derived_from"] = ds.parent_cids()
        entry = LocalDatasetEntry(name=bare, schema_ref=schema_ref, data_urls=[s.url for s in specs], metadata=meta)
        try:
            same = repo.provider.get_entry(entry.cid)
        except NotFoundError:
            same = None
        if same is not None and same.name != bare:
            # atdata's CID depends on the schema and the URLs only: the same shards in the same
            # order would be the other entry's row, and writing it would rename that entry
            raise SameShardsError(
                f"reference_dataset({name!r}): these are exactly the shards of entry {same.name!r} ({same.cid}), "
                "so a reference would be that entry itself; label the name onto it (index.label(name, cid)), "
                "copy them with insert_dataset(...) to get a separate entry, or read the existing one",
                existing=same,
            )
        return self._commit(repo, entry)

    def insert_dataset(
        self,
        ds: "Dataset",
        *,
        name: str,
        schema_ref: str | None = None,
        metadata: dict | None = None,
        prefix: str | None = None,
        data_store: DataStore | None = None,
        maxcount: int | None = None,
        maxsize: int | None = None,
        manifest: bool = False,
        cache_local: bool = False,
        description: str | None = None,
        tags: list[str] | None = None,
        license: str | None = None,
        **unknown: Any,
    ) -> LocalDatasetEntry:
        """Register a dataset under ``name`` (AbstractIndex protocol).

        The repository comes from the name's prefix (``lab/mnist``). If that repository
        has a data store (or ``data_store=`` is given), the shards are copied into it
        under ``prefix`` (default: the name), re-sharded by ``maxcount``/``maxsize`` when
        given, with a manifest per shard if ``manifest``, and their checksums recorded;
        otherwise the dataset's URLs are indexed as they are. ``@handle/x`` publishes to
        the atmosphere, with ``description``, ``tags`` and ``license`` on its record.
        ``metadata`` defaults to the dataset's own.

        ``cache_local`` (atdata: stage S3 writes on local disk first) is accepted and has
        no effect: shards always stream and are always hashed. A keyword this call does
        not know, or one that the chosen route would ignore (``maxcount`` without a
        store, ``tags`` for a local entry, ...), raises :class:`UnknownOptionError`
        instead of being dropped; atdata's ``force=``/``copy=`` are not supported.
        """
        if unknown:
            raise UnknownOptionError.for_call(f"insert_dataset(name={name!r})", unknown, _INSERT_OPTIONS)
        key, repo, bare = self._route_write(name)
        store_options = {"prefix": prefix, "data_store": data_store, "maxcount": maxcount, "maxsize": maxsize,
                         "manifest": manifest or None}
        record_options = {"description": description, "tags": tags, "license": license}
        if key == ATMOSPHERE:
            _reject_ignored(name, store_options, "publishing to the atmosphere uploads the dataset's shards as they are")
            return self._publish_dataset(ds, ref=bare, schema_ref=schema_ref, metadata=metadata,
                                         **{k: v for k, v in record_options.items() if v is not None})
        assert repo is not None
        _reject_ignored(name, record_options, "they describe an atmosphere record ('@handle/name'); put them in "
                                              "metadata= for a local entry")
        store = data_store or repo.data_store
        if store is None:
            _reject_ignored(name, store_options, f"repository {key!r} has no data store, so the dataset's URLs are "
                                                 "indexed as they are; pass data_store= to copy the shards")
            return self._index_urls(repo, ds, name=bare, schema_ref=schema_ref, metadata=metadata)
        prefix = prefix or bare
        validate_dataset_name(prefix)
        # gc: this index writes into the store
        claim_store(store, repo.provider, what=f"record the index identity before inserting {name!r}")
        if schema_ref is None:
            schema_ref = self._implicit_schema_ref(_dataset_sample_type(ds), repo)
        result = store.write_shards(ds, prefix=prefix, maxcount=maxcount, maxsize=maxsize, manifest=manifest)
        base = metadata if metadata is not None else (getattr(ds, "metadata", None) or {})
        entry = LocalDatasetEntry(name=bare, schema_ref=schema_ref, data_urls=list(result), metadata=_with_stats(base, result))
        return self._commit(repo, entry)

    def write(self, samples: Iterable[Any], *, name: str, **kwargs: Any) -> LocalDatasetEntry:
        """Deprecated (atdata 0.7): use :meth:`write_samples`, which this calls."""
        _deprecated("Index.write() is deprecated, use Index.write_samples()")
        return self.write_samples(samples, name=name, **kwargs)

    def write_samples(
        self,
        samples: Iterable[Any],
        *,
        name: str,
        schema_ref: str | None = None,
        description: str | None = None,
        tags: list[str] | None = None,
        license: str | None = None,
        maxcount: int = 10000,
        maxsize: int | None = None,
        metadata: dict | None = None,
        manifest: bool = False,
        progress: Callable[[int, int], None] | None = None,
        allow_empty: bool = False,
        sample_type: type | None = None,
        data_store: DataStore | None = None,
    ) -> LocalDatasetEntry:
        """Stream samples into shards and create an index entry in one step.

        A bare name writes to the local repository (shards under ``~/.atdata/data``
        unless a store is configured), ``repo/name`` to a mounted repository, and
        ``@handle/name`` publishes to the atmosphere. ``maxcount``/``maxsize`` bound
        the final shards (atdata ignores them). ``progress(samples, bytes)`` is called
        every few seconds while writing. Raises :class:`EmptyDatasetError` for no samples,
        unless ``allow_empty``: then an entry with one empty shard is written, typed by
        ``sample_type`` (or ``schema_ref``), since no sample says what the type is.
        ``data_store`` (atdata 0.7) writes the shards there instead of the repository's store.
        """
        key, repo, bare = self._route_write(name)
        if allow_empty and key == ATMOSPHERE:
            raise ConfigurationError(
                f"allow_empty: an empty dataset cannot be published to the atmosphere ({name!r}); "
                "write it to a local repository"
            )
        if key == ATMOSPHERE:
            if data_store is not None:
                raise ConfigurationError(
                    f"write_samples({name!r}, data_store=...): shards published to the atmosphere are uploaded as "
                    "PDS blobs; write to a local repository to use a data store"
                )
            return self._write_atmosphere(
                samples, ref=bare, schema_ref=schema_ref, description=description, tags=tags,
                license=license, maxcount=maxcount, maxsize=maxsize, metadata=metadata,
            )
        assert repo is not None
        store = data_store if data_store is not None else self._store_for(repo)
        # gc: this index writes into the store
        claim_store(store, repo.provider, what=f"record the index identity before writing {name!r}")
        result, schema_ref = self._write_shards(
            samples, store, prefix=bare, repo=repo, schema_ref=schema_ref, maxcount=maxcount,
            maxsize=maxsize, manifest=manifest, progress=progress, allow_empty=allow_empty, sample_type=sample_type,
        )
        entry = LocalDatasetEntry(name=bare, schema_ref=schema_ref, data_urls=list(result), metadata=_with_stats(metadata or {}, result))
        return self._commit(repo, entry)

    def _write_shards(
        self, samples: Iterable[Any], store: DataStore, *, prefix: str, repo: Repository, schema_ref: str | None,
        maxcount: int | None, maxsize: int | None, manifest: bool, progress: Callable[[int, int], None] | None = None,
        allow_empty: bool = False, sample_type: type | None = None,
    ) -> tuple[ShardWriteResult, str]:
        it = iter(samples)
        try:
            first = next(it)
            pending: Iterable[Any] = itertools.chain([first], it)
            sample_type = type(first)
        except StopIteration:
            if not allow_empty:
                raise EmptyDatasetError(
                    f"samples must be non-empty: nothing to write for dataset {prefix!r}; pass at least one sample "
                    "(or allow_empty=True with sample_type=, for a dataset that may really be empty)"
                ) from None
            if sample_type is None and schema_ref is None:
                raise EmptyDatasetError(
                    f"dataset {prefix!r} is empty and allow_empty is set, but nothing says its sample type: "
                    "pass sample_type= (in Dagster: annotate the asset's return type, e.g. -> list[MySample])"
                ) from None
            pending = ()
        if sample_type is not None:
            try:
                ensure_packable_type(sample_type)
            except NotPackableError as exc:
                raise NotPackableError(f"sample 0 of dataset {prefix!r}: {exc}") from None
        if schema_ref is None:
            assert sample_type is not None
            schema_ref = self._implicit_schema_ref(sample_type, repo)
        writer = ShardWriter(store, prefix, maxcount=maxcount, maxsize=maxsize, manifest=manifest,
                             sample_type=sample_type, progress=progress)
        try:
            with writer:
                result = write_all(writer, pending, where=f"for dataset {prefix!r}", allow_empty=allow_empty)
        except Exception:  # the samples' generator, a codec or the store failed: nothing gets indexed
            self._remove_unreferenced(store, writer.created_urls)
            raise
        return result, schema_ref

    def _remove_unreferenced(self, store: DataStore, urls: list[str]) -> None:
        """Delete what a failed write created, so repeated failures do not fill the store.

        Only objects this write itself created (not content that was already stored), and
        only if no entry of any mounted repository references them (re-checked here). When
        the references cannot be read, everything is left for gc. Never raises: the write's
        own error is what the caller sees.
        """
        if not urls:
            return
        referenced: set[str] = set()
        try:
            for repo in self._repos.values():
                for entry in repo.provider.iter_entries():
                    referenced.update(entry.referenced_urls())
        except AtdataError as exc:
            log.warning("left %d object(s) of a failed write for gc: cannot read the references (%s)", len(urls), exc)
            return
        for url in urls:
            if url in referenced:
                continue
            try:
                store.delete(url)
            except (AtdataError, OSError) as exc:
                log.warning("could not remove %s after a failed write (%s); gc will", url, exc)

    # -------------------------------------------------------------- reading
    def open_url(self, url: str) -> BinaryIO:
        """Open a shard URL the user names with the store that owns it (credentials included).

        For the shards of an entry use :meth:`shard_opener` (``index.shard_opener(entry)``),
        which reads shards named by foreign records anonymously.
        """
        if url.startswith("at://"):
            return self._require_atmosphere(f"reading {url}").open_url(url)
        return self.shard_opener().open(url)

    def shard_opener(self, entry: LocalDatasetEntry | None = None) -> RoutingOpener:
        """A picklable opener for ``entry``'s shards (any shard URL when ``entry`` is ``None``).

        Shards of the index's own entries are read with the credentials of the store that
        owns them, other ``s3://`` buckets with boto3's default credential chain. Shards
        named by a record read from the atmosphere (a foreign record) are read anonymously
        (unsigned S3 requests at the record's endpoint, plain HTTPS, public PDS blobs),
        never as local files, unless their bucket is in ``allow_credentials_for``: then the
        store of that bucket opens them with its own endpoint and credentials.
        """
        foreign = _from_atmosphere(entry)
        urls = list(entry.data_urls) if entry is not None else None
        routes = []
        for repo in self._repos.values():
            store = repo.data_store
            if store is None:
                continue
            if foreign and not (isinstance(store, S3DataStore) and store.bucket in self.allow_credentials_for):
                continue
            route = store_opener(store)
            if urls is None or any(route.owns(u) for u in urls):
                routes.append(route)
        schemes = {}
        wants_blobs = self._atmosphere is not None if urls is None else any(u.startswith("at://") for u in urls)
        backend = self.atmosphere if wants_blobs else None
        if backend is not None:
            schemes["at"] = backend.blob_opener()
        if foreign and entry is not None:
            info = _dict_field(entry.metadata or {}, "atmosphere")
            endpoint, region = info.get("endpoint"), info.get("region")
            return RoutingOpener(
                routes,
                s3=AnonymousS3Opener(endpoint if isinstance(endpoint, str) and endpoint else None,
                                     region if isinstance(region, str) and region else None),
                http=HttpOpener(), schemes=schemes, local=False,
                origin=f"atmosphere record {getattr(entry, 'uri', '') or entry.name}",
            )
        return RoutingOpener(routes, s3=default_chain_opener(), http=HttpOpener(), schemes=schemes)

    def dataset(self, ref: str, sample_type: type[T] | None = None) -> "Dataset[T]":
        """A lazy :class:`Dataset` over the entry ``ref`` resolves to, typed by ``sample_type`` or its schema."""
        entry = self.get_dataset(ref)
        return self.dataset_for_entry(entry, sample_type)

    def dataset_for_entry(self, entry: LocalDatasetEntry, sample_type: type[T] | None = None) -> "Dataset[T]":
        """A lazy :class:`Dataset` over one entry's shards (:class:`CorruptEntryError` if its row is unreadable)."""
        entry.ensure_intact()  # a listed entry whose row did not decode: never read it unverified

        cls = sample_type or self.get_schema_type(entry.schema_ref, register=False)
        opener = self.shard_opener(entry)
        return Dataset[cls](list(entry.data_urls), metadata=entry.metadata, opener=opener, cid=entry.cid)  # type: ignore[valid-type]

    def verify(self, ref_or_entry: str | LocalDatasetEntry) -> dict[str, str]:
        """Re-hash every shard of an entry: URL -> ``ok`` / ``mismatch`` / ``missing`` / ``skipped`` / ``error:...``.

        Reads stop one byte past each shard's recorded size (``metadata["stats"]["shard_bytes"]``),
        so an overlong or endless shard is a ``mismatch``, not a read that never ends.
        """
        entry = ref_or_entry if isinstance(ref_or_entry, LocalDatasetEntry) else self.get_dataset(ref_or_entry)
        return verify_shards(entry.data_urls, entry.checksums, opener=self.shard_opener(entry),
                             sizes=recorded_shard_sizes(entry))

    # ------------------------------------------------------------ atmosphere
    def promote_entry(self, entry_name: str, *, name: str | None = None, description: str | None = None,
                      tags: list[str] | None = None, license: str | None = None,
                      progress: Callable[[int], None] | None = None) -> str:
        """Publish a locally indexed dataset (schema, entry, label) to the atmosphere; return the entry's AT URI.

        Promoting the same entry again reuses its records (the URIs are kept in the
        local entry's ``metadata["atmosphere"]``). Local shards are uploaded as blobs;
        S3 and HTTP shards are referenced where they are. ``progress(n)`` is called with
        the bytes of each uploaded chunk.

        Deprecated in atdata 0.7 (which publishes with ``insert_dataset(ds, name="@handle/name")``);
        this package keeps it as the way to promote an existing entry, re-using its records.
        """
        _deprecated("Index.promote_entry() is deprecated, use Index.insert_dataset()")
        return self.promote(entry_name, name=name, description=description, tags=tags, license=license,
                            progress=progress)

    def promote(self, entry_name: str, **kwargs: Any) -> str:
        """:meth:`promote_entry` without atdata 0.7's deprecation warning (this package's CLI and sensor use it)."""
        backend = self._require_atmosphere("promote_entry")
        resolved = resolve_ref(entry_name, self._mounted())
        if resolved.is_atmosphere:
            raise InvalidRefError(f"{entry_name!r} is already an atmosphere ref; promote a local entry name")
        repo = self._repo(resolved.backend)
        entry = self._lookup(repo.provider, resolved.name, entry_name)
        return self._promote(backend, repo, entry, **kwargs)

    def promote_cid(self, cid: str, **kwargs: Any) -> str:
        """Like :meth:`promote_entry`, for the entry with this CID."""
        backend = self._require_atmosphere("promote")
        for repo in self._repos.values():
            try:
                entry = repo.provider.get_entry(cid)
            except NotFoundError:
                continue
            return self._promote(backend, repo, entry, **kwargs)
        raise NotFoundError(f"no index entry with CID {cid!r}")

    def _promote(self, backend: Any, repo: Repository, entry: LocalDatasetEntry, **kwargs: Any) -> str:
        if not entry.data_urls:
            raise ConfigurationError(f"entry {entry.name!r} has no data URLs to promote")
        schema = self._schema_record(entry.schema_ref)
        result = backend.promote(entry, schema, shard_sources=self._shard_sources(entry), **kwargs)
        atmosphere = {"uri": result.entry_uri, "schema_uri": result.schema_uri, "label_uri": result.label_uri}
        # merged inside the provider's write transaction: `entry` was read before the
        # (slow) publish, and writing back that copy would undo concurrent metadata writes
        repo.provider.merge_entry_metadata(entry.cid, {"atmosphere": atmosphere})
        return result.entry_uri

    def _shard_sources(self, entry: LocalDatasetEntry) -> list[Any]:
        stores = [r.data_store for r in self._repos.values() if r.data_store is not None]
        return shard_sources_for(entry, stores=stores, opener=self.open_url)

    def promote_dataset(self, dataset: "Dataset", *, name: str, sample_type: type | None = None, schema_version: str = "1.0.0",
                        description: str | None = None, tags: list[str] | None = None, license: str | None = None) -> str:
        """Publish a Dataset directly to the atmosphere (schema with dedup, entry, label); return the AT URI.

        Deprecated in atdata 0.7: use ``insert_dataset(ds, name="@handle/name")``.
        """
        _deprecated("Index.promote_dataset() is deprecated, use Index.insert_dataset()")
        backend = self._require_atmosphere("promote_dataset")
        cls = sample_type or _dataset_sample_type(dataset)
        record = build_schema_record(cls, version=schema_version)
        entry = LocalDatasetEntry(name=name, schema_ref=make_schema_ref(cls.__name__, schema_version),
                                  data_urls=list(dataset.list_shards()), metadata=dict(getattr(dataset, "metadata", None) or {}) or None)
        result = backend.promote(entry, record, name=name, description=description, tags=tags, license=license,
                                 shard_sources=self._shard_sources(entry))
        return result.entry_uri

    def _publish_dataset(self, ds: "Dataset", *, ref: str, schema_ref: str | None, metadata: dict | None, **kwargs: Any) -> LocalDatasetEntry:
        resolved = resolve_ref(ref, self._mounted())
        backend = self._require_atmosphere(f"publishing {ref!r}")
        backend.ensure_writable_for(resolved.handle)
        cls = _dataset_sample_type(ds)
        record = self._schema_record(schema_ref) if schema_ref else build_schema_record(cls, version="1.0.0")
        entry = LocalDatasetEntry(name=resolved.name, schema_ref=record.get("$ref") or f"atdata://local/schema/{record['name']}@{record['version']}",
                                  data_urls=list(ds.list_shards()), metadata=metadata or None)
        result = backend.promote(entry, record, name=resolved.name, shard_sources=self._shard_sources(entry),
                                 **{k: kwargs[k] for k in ("description", "tags", "license") if k in kwargs})
        return backend.resolve(result.entry_uri)

    def _write_atmosphere(self, samples: Iterable[Any], *, ref: str, schema_ref: str | None, description: str | None,
                          tags: list[str] | None, license: str | None, maxcount: int, maxsize: int | None,
                          metadata: dict | None) -> LocalDatasetEntry:
        resolved = resolve_ref(ref, self._mounted())
        backend = self._require_atmosphere(f"writing {ref!r}")
        backend.ensure_writable_for(resolved.handle)
        limit = getattr(backend, "blob_limit", 50_000_000)
        maxsize = min(maxsize or limit, limit)
        with tempfile.TemporaryDirectory(prefix="atdata-publish-") as tmp:
            store = LocalDiskStore(tmp)
            result, schema_ref = self._write_shards(
                samples, store, prefix=validate_dataset_name(resolved.name), repo=self._repos[LOCAL],
                schema_ref=schema_ref, maxcount=maxcount, maxsize=maxsize, manifest=False,
            )
            entry = LocalDatasetEntry(name=resolved.name, schema_ref=schema_ref, data_urls=list(result),
                                      metadata=_with_stats(metadata or {}, result))
            schema = self._schema_record(schema_ref)
            sources = shard_sources_for(entry, stores=[store], opener=store.open_read)
            out = backend.promote(entry, schema, name=resolved.name, description=description, tags=tags,
                                  license=license, shard_sources=sources)
        return backend.resolve(out.entry_uri)


def _with_stats(metadata: dict, result: ShardWriteResult) -> dict:
    meta = dict(metadata or {})
    checksums = dict(meta.get("checksums") or {})
    checksums.update(result.checksums)
    meta["checksums"] = checksums
    shards = getattr(result, "shards", [])
    if shards:
        meta["stats"] = {
            "num_samples": sum(s.num_samples for s in shards),
            "num_shards": len(shards),
            "total_bytes": sum(s.size for s in shards),
            "shard_samples": [s.num_samples for s in shards],
            "shard_bytes": [s.size for s in shards],
        }
        manifests = [s.manifest_url for s in shards if s.manifest_url]
        if manifests:
            meta["manifests"] = manifests
    return meta


def _from_atmosphere(entry: Any) -> bool:
    """Whether an entry was read from an atmosphere record (its shard URLs are foreign input)."""
    uri = getattr(entry, "uri", None)
    return isinstance(uri, str) and uri.startswith("at://")


def _dict_field(mapping: dict, key: str) -> dict:
    """``mapping[key]`` if it is a dict, else ``{}`` (metadata may have been written by another tool)."""
    value = mapping.get(key)
    return value if isinstance(value, dict) else {}


def recorded_shard_sizes(entry: LocalDatasetEntry) -> dict[str, int]:
    """URL -> byte size recorded for an entry's shards (``stats.shard_bytes``); empty when not recorded.

    A one-shard atmosphere entry without per-shard sizes uses the record's ``size.bytes``
    (the whole dataset is that shard).
    """
    meta = entry.metadata or {}
    stats = _dict_field(meta, "stats")
    sizes = stats.get("shard_bytes")
    urls = list(entry.data_urls)
    if isinstance(sizes, list) and len(sizes) == len(urls) and all(isinstance(n, int) and n >= 0 for n in sizes):
        return dict(zip(urls, sizes))
    size = _dict_field(_dict_field(meta, "atmosphere"), "size")
    total = size.get("bytes")
    if isinstance(total, int) and total >= 0 and len(urls) == 1:
        return {urls[0]: total}
    return {}


def _dataset_sample_type(ds: Any) -> type:
    cls = getattr(ds, "sample_type", None)
    if cls is None or cls is DictSample:
        raise ConfigurationError(
            "the dataset is untyped (DictSample) and no schema_ref was given; "
            "read it as a typed Dataset[YourSample] or pass schema_ref='atdata://local/schema/Name@version'"
        )
    return cls


def _version_key(v: str) -> tuple:
    parts = v.split(".")
    if len(parts) == 3 and all(p.isdigit() for p in parts):
        return (1, *map(int, parts))
    return (0, v)


def _authority_of(ref: str) -> str:
    """The stub namespace of a schema ref: its ``atdata://`` authority, or the DID of an
    ``at://`` ref (so atmosphere schemas never share stub files with local ones)."""
    for scheme in ("atdata://", "at://"):
        if ref.startswith(scheme):
            return ref[len(scheme):].split("/", 1)[0] or "local"
    return "local"


def _load_schema_text(text: Any, name: str, version: str) -> dict:
    """A stored schema record (JSON text, possibly written by another tool) as a dict."""
    try:
        record = json.loads(text)
    except (TypeError, ValueError, RecursionError) as exc:
        raise SchemaError(
            f"stored schema {name}@{version} is not valid JSON ({type(exc).__name__}: {exc}); the row was "
            "written by another tool or is corrupt: repair it or publish the schema again"
        ) from None
    if not isinstance(record, dict):
        raise SchemaError(
            f"stored schema {name}@{version} is JSON {type(record).__name__}, expected a JSON object "
            "(a schema record); repair it or publish the schema again"
        )
    return record
