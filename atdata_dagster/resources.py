"""Dagster resources: one dataset index (repositories, data stores, atmosphere) as typed config.

``AtdataIndexResource(path="index.db")`` is the whole configuration of the embedded
default. Field names mirror :class:`atdata_dagster.local.Index`. Secrets
(``aws_secret_access_key``, ``atmosphere_password``, and a ``dsn`` / ``redis_url``
that embeds a password) are plain ``str`` fields, so ``dagster.EnvVar("NAME")`` works
for them and the UI shows the variable name, not the value. Nothing here touches the
network or the disk at definition time: the engine ``Index`` is built in
``setup_for_execution`` and closed in ``teardown_after_execution``.
"""


import importlib.metadata
import os
import threading
from typing import Any, Literal, Optional, Union

import dagster as dg
from pydantic import ConfigDict, Field, PrivateAttr

from .errors import ConfigurationError
from .redact import redact
from .index.index import Index, Repository
from .index.providers import IndexProvider, create_provider, provider_from_url
from .stores.base import DataStore
from .stores.disk import LocalDiskStore

__all__ = [
    "AtdataIndexResource",
    "LocalDiskStoreConfig",
    "RepositoryConfig",
    "S3DataStoreConfig",
    "check_atmosphere_login",
    "check_index_choice",
]


def _library_version() -> str:
    try:
        return importlib.metadata.version("atdata-dagster")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - not installed as a distribution
        return "0+unknown"


def _register_library() -> None:
    """Announce the library in the code location's "libraries" list (a private Dagster API).

    Optional: a Dagster without the registry (ImportError) or with another signature
    (AttributeError, TypeError) must never break importing this module.
    """
    try:  # lazy: an optional, private Dagster API
        from dagster_shared.libraries import DagsterLibraryRegistry  # lazy: a private Dagster API, probed once at import
    except ImportError:  # pragma: no cover - older dagster
        try:  # lazy: an optional, private Dagster API (older location)
            from dagster._core.libraries import DagsterLibraryRegistry  # lazy: a private Dagster API, probed once at import
        except ImportError:
            return
    try:
        DagsterLibraryRegistry.register("atdata-dagster", _library_version(), is_dagster_package=False)
    except (AttributeError, TypeError):  # pragma: no cover - a registry with another API
        return


_register_library()


def _masked_repr_args(model: Any, pairs: Any) -> Any:
    """``__repr_args__`` with the password of a ``dsn`` / ``redis_url`` masked (``***``)."""
    for name, value in pairs:
        if name in ("dsn", "redis_url") and isinstance(value, str):
            value = redact(value)
        yield name, value


# --------------------------------------------------------------------------- data stores
class LocalDiskStoreConfig(dg.Config):
    """Shards on the local filesystem."""

    model_config = ConfigDict(extra="forbid")  # a misspelt option fails; it is never silently ignored

    kind: Literal["local"] = Field(default="local", description="Store kind: 'local' for shards on local disk.")
    root: Optional[str] = Field(
        default=None,
        description="Directory holding the shards; default ~/.atdata/data, as for Index.",
    )

    def build(self) -> DataStore:
        return LocalDiskStore(self.root)

    def describe(self) -> str:
        return f"local disk {self.root or '~/.atdata/data'}"


class S3DataStoreConfig(dg.Config):
    """Shards in an S3 bucket (AWS or any S3-compatible server)."""

    model_config = ConfigDict(extra="forbid")  # a misspelt option fails; it is never silently ignored

    kind: Literal["s3"] = Field(default="s3", description="Store kind: 's3' for shards in an S3 bucket.")
    bucket: str = Field(description="Bucket name, e.g. 'my-datasets'.")
    endpoint_url: Optional[str] = Field(
        default=None,
        description="S3 endpoint for S3-compatible servers (e.g. 'http://127.0.0.1:7480'); None for AWS.",
    )
    region_name: Optional[str] = Field(default=None, description="AWS region, e.g. 'us-east-1'.")
    aws_access_key_id: Optional[str] = Field(
        default=None,
        description="Access key id; None uses the default AWS credential chain. Prefer dagster.EnvVar.",
    )
    aws_secret_access_key: Optional[str] = Field(
        default=None,
        repr=False,
        description="Secret access key (secret: pass dagster.EnvVar('NAME'), never a literal).",
    )
    aws_session_token: Optional[str] = Field(
        default=None,
        repr=False,
        description="Session token for temporary credentials (secret: pass dagster.EnvVar).",
    )
    prefix: str = Field(default="", description="Key prefix inside the bucket under which every dataset lives.")

    def build(self) -> DataStore:
        from .stores.s3 import S3DataStore  # lazy: boto3 is imported only when an S3 store is configured

        return S3DataStore(
            bucket=self.bucket,
            endpoint_url=self.endpoint_url or None,
            region_name=self.region_name or None,
            aws_access_key_id=self.aws_access_key_id or None,
            aws_secret_access_key=self.aws_secret_access_key or None,
            aws_session_token=self.aws_session_token or None,
            prefix=self.prefix or "",
        )

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")


DataStoreConfig = Union[LocalDiskStoreConfig, S3DataStoreConfig]


def _store_field(what: str) -> Any:
    return Field(
        default_factory=LocalDiskStoreConfig,
        discriminator="kind",
        description=(
            f"Where {what} shards are written: {{'kind': 'local', 'root': ...}} (default, "
            "~/.atdata/data) or {'kind': 's3', 'bucket': ..., ...}."
        ),
    )


def _env_vars(value: Any):
    """Names of the ``dagster.EnvVar`` values left unresolved in a (nested) config object."""
    if isinstance(value, dg.EnvVar):
        yield value.env_var_name
    elif isinstance(value, dg.Config):  # ConfigurableResource and nested config classes
        for name in type(value).model_fields:
            yield from _env_vars(value.__dict__.get(name))
    elif isinstance(value, dict):
        for v in value.values():
            yield from _env_vars(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _env_vars(v)


def check_index_choice(
    where: str, path: str | None, dsn: str | None, redis_url: str | None, *, required: bool = False,
) -> None:
    """At most one of ``path``, ``dsn`` and ``redis_url`` (exactly one when ``required``).

    Raises :class:`ConfigurationError` naming ``where`` and the fields to set.
    """
    given = [n for n, v in (("path", path), ("dsn", dsn), ("redis_url", redis_url)) if v]
    if len(given) > 1:
        raise ConfigurationError(
            f"{where}: set only one of path (SQLite), dsn (PostgreSQL) or redis_url (Redis); got {', '.join(given)}"
        )
    if required and not given:
        raise ConfigurationError(f"{where} needs an index: set path (SQLite), dsn (PostgreSQL) or redis_url (Redis)")


def check_atmosphere_login(where: str, handle: str | None, password: str | None) -> None:
    """Both or neither of an atmosphere handle and app password (:class:`ConfigurationError`)."""
    if bool(handle) != bool(password):
        raise ConfigurationError(
            f"{where}: set both atmosphere_handle and atmosphere_password (the password as dagster.EnvVar, "
            "'{{ env.NAME }}' in YAML) to publish, or neither for read-only access"
        )


def _build_provider(path: str | None, dsn: str | None, redis_url: str | None, where: str) -> IndexProvider:
    check_index_choice(where, path, dsn, redis_url)
    if dsn:
        return create_provider("postgres", dsn=dsn)
    if redis_url:
        return provider_from_url(redis_url)
    return create_provider("sqlite", path=path or None)


class RepositoryConfig(dg.Config):
    """A named repository: its own index provider and data store."""

    model_config = ConfigDict(extra="forbid")  # a misspelt option fails; it is never silently ignored

    path: Optional[str] = Field(default=None, description="SQLite index file of this repository.")
    dsn: Optional[str] = Field(
        default=None,
        description="PostgreSQL DSN of this repository ('postgresql://user:pw@host/db'); use dagster.EnvVar if it has a password.",
    )
    redis_url: Optional[str] = Field(
        default=None,
        description="Redis URL of this repository ('redis://host:6379/0'); use dagster.EnvVar if it has a password.",
    )
    data_store: DataStoreConfig = _store_field("this repository's")

    def __repr_args__(self) -> Any:  # the DSN / Redis URL may hold a password
        return _masked_repr_args(self, super().__repr_args__())

    def build(self, name: str) -> Repository:
        check_index_choice(f"repository {name!r}", self.path, self.dsn, self.redis_url, required=True)
        provider = _build_provider(self.path, self.dsn, self.redis_url, f"repos[{name!r}]")
        return Repository(provider=provider, data_store=self.data_store.build())


# --------------------------------------------------------------------------- the resource
class AtdataIndexResource(dg.ConfigurableResource):
    """A dataset index: the built-in ``local`` repository, named repositories and the atmosphere.

    Hand it to :class:`~atdata_dagster.io_manager.AtdataIOManager`, or use
    ``get_index()`` in an asset or op to reach the engine's ``Index`` directly.

    With none of ``path``, ``dsn`` and ``redis_url`` the index is SQLite at
    ``~/.atdata/index.db``, as for ``Index()``.
    """

    model_config = ConfigDict(extra="forbid")  # a misspelt option fails; it is never silently ignored

    path: Optional[str] = Field(
        default=None,
        description="SQLite index file (default ~/.atdata/index.db). Mutually exclusive with dsn and redis_url.",
    )
    dsn: Optional[str] = Field(
        default=None,
        description="PostgreSQL DSN ('postgresql://user:pw@host/db') for a shared index; pass dagster.EnvVar if it holds a password.",
    )
    redis_url: Optional[str] = Field(
        default=None,
        description="Redis URL ('redis://host:6379/0') for a Redis index; pass dagster.EnvVar if it holds a password.",
    )
    data_store: DataStoreConfig = _store_field("the local repository's")
    repos: dict[str, RepositoryConfig] = Field(
        default_factory=dict,
        description="Named repositories mounted next to 'local': name -> {path|dsn|redis_url, data_store}. Write to one with the asset metadata 'atdata/repo'.",
    )
    atmosphere: bool = Field(
        default=True,
        description="Enable the ATProto atmosphere backend (anonymous and read-only unless handle and password are set); False disables it.",
    )
    atmosphere_service_url: Optional[str] = Field(
        default=None,
        description="PDS service URL for the atmosphere, e.g. 'https://bsky.social'; None uses the client's default.",
    )
    atmosphere_handle: Optional[str] = Field(
        default=None,
        description="ATProto handle to publish as, e.g. 'lab.bsky.social'.",
    )
    atmosphere_password: Optional[str] = Field(
        default=None,
        repr=False,
        description="ATProto app password of atmosphere_handle (secret: pass dagster.EnvVar('NAME')).",
    )

    _index: Any = PrivateAttr(default=None)
    _lock: Any = PrivateAttr(default_factory=threading.Lock)

    def __init__(self, **data: Any):
        # Combinations that cannot work fail where the resource is built, i.e. when the
        # definitions load (values may still be unresolved dagster.EnvVar names: only
        # whether a field is set matters here), with a ConfigurationError naming the fields.
        super().__init__(**data)
        check_index_choice("AtdataIndexResource", self.path, self.dsn, self.redis_url)
        for name, repo in self.repos.items():
            check_index_choice(f"AtdataIndexResource.repos[{name!r}]", repo.path, repo.dsn, repo.redis_url, required=True)
        check_atmosphere_login("AtdataIndexResource", self.atmosphere_handle, self.atmosphere_password)

    def __repr_args__(self) -> Any:  # the DSN / Redis URL may hold a password
        return _masked_repr_args(self, super().__repr_args__())

    # -- lifecycle
    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._index = self.build_index()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self.close()

    def close(self) -> None:
        """Close the index's connections (idempotent)."""
        index, self._index = self._index, None
        if index is not None:
            index.close()

    # -- the engine object
    def get_index(self) -> Index:
        """The engine ``Index`` for this configuration (built on first use outside a run)."""
        if self._index is None:
            with self._lock:
                if self._index is None:
                    self._index = self.build_index()
        return self._index

    def build_index(self) -> Index:
        """A new engine ``Index`` for this configuration (the caller closes it).

        Outside a run, ``dagster.EnvVar`` fields are read from the environment here (a
        missing variable raises :class:`ConfigurationError` naming it).
        """
        env_vars = set(_env_vars(self))
        missing = sorted(v for v in env_vars if os.environ.get(v) is None)
        if missing:
            raise ConfigurationError(
                f"AtdataIndexResource: environment variable(s) {', '.join(missing)} "
                "(configured as dagster.EnvVar) are not set; export them before building the index"
            )
        if env_vars:
            with self.process_config_and_initialize_cm() as resolved:
                return resolved.build_index()
        provider = _build_provider(self.path, self.dsn, self.redis_url, "AtdataIndexResource")
        try:
            repos = {name: cfg.build(name) for name, cfg in self.repos.items()}
            return Index(
                provider,
                data_store=self.data_store.build(),
                repos=repos,
                **self._atmosphere_kwargs(),
            )
        except BaseException:
            provider.close()
            raise

    def _atmosphere_kwargs(self) -> dict[str, Any]:
        """The ``atmosphere`` argument of ``Index``: left out for its anonymous default."""
        if not self.atmosphere:
            return {"atmosphere": None}
        check_atmosphere_login("AtdataIndexResource", self.atmosphere_handle, self.atmosphere_password)
        if not (self.atmosphere_handle or self.atmosphere_service_url):
            return {}
        from .atmosphere import AtmosphereClient  # lazy: atproto is imported only when the atmosphere is configured

        kwargs: dict[str, Any] = {}
        if self.atmosphere_handle:
            kwargs.update(handle=self.atmosphere_handle, password=self.atmosphere_password)
        if self.atmosphere_service_url:
            return {"atmosphere": AtmosphereClient(self.atmosphere_service_url, **kwargs)}
        return {"atmosphere": AtmosphereClient(**kwargs)}

    def describe(self) -> str:
        """Where the index lives, for logs (never includes a secret)."""
        index = self._index
        if index is not None:
            return repr(index)
        if self.dsn:
            where = "postgres"
        elif self.redis_url:
            where = "redis"
        else:
            where = f"sqlite {self.path or '~/.atdata/index.db'}"
        return f"AtdataIndexResource({where}, {self.data_store.describe()}, repos={sorted(self.repos)})"
