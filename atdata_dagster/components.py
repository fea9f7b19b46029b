"""Dagster Components: declare an index and dataset assets in ``defs.yaml``.

Two components, registered for ``dg`` through the ``dagster_dg_cli.registry_modules``
entry point (``dg list components`` shows them):

``AtdataIndexResourceComponent``
    An :class:`~atdata_dagster.resources.AtdataIndexResource` (SQLite ``path``,
    PostgreSQL ``dsn`` or ``redis_url``; a local-disk or S3 ``data_store``; named
    ``repos``; the atmosphere) bound to ``resource_key``, plus an
    :class:`~atdata_dagster.io_manager.AtdataIOManager` on it under ``io_manager_key``.
    Secrets are written ``"{{ env.NAME }}"`` and become ``dagster.EnvVar("NAME")``: the
    value is read at run time and never appears in the definitions, the UI or metadata.

``WebDatasetComponent``
    One dataset asset (``kinds={"webdataset"}``) whose samples come from a Python
    callable (``fn: "my_pkg.module:make_samples"``), optionally reading upstream datasets
    (``ins``), stored through the ``AtdataIOManager``: shards, an index entry with
    lineage, and the same metadata as an asset declared in Python.

Example ``defs.yaml`` (two documents in one file)::

    type: atdata_dagster.components.AtdataIndexResourceComponent
    attributes:
      dsn: "{{ env.INDEX_DSN }}"
      data_store: {kind: local, root: /data/shards}
      atmosphere: false
    ---
    type: atdata_dagster.components.WebDatasetComponent
    attributes:
      asset_key: digits/raw
      fn: my_pkg.digits:load_digits
      code_version: "1"
      maxcount: 500
      checks: true

Every field has a description: it is the JSON schema ``dg`` shows and checks.
Errors in the declaration (a bad name, an unimportable ``fn``, a secret written as a
literal or as part of a longer template) raise typed errors from
:mod:`atdata_dagster.errors` when the definitions are built, so ``dg check defs``
reports them; a dataset asset whose ``io_manager_key`` is not an ``AtdataIOManager``
fails its run rather than letting Dagster pickle the samples. Both components carry
Dagster's ``preview`` mark (a ``PreviewWarning`` on use), as the project's conventions
recommend for a new integration component; ``dg scaffold defs`` writes a starting
``defs.yaml`` for each.
"""

import importlib
import inspect
import keyword
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Annotated, Any, Literal, Optional, TypeVar, Union

import dagster as dg
from pydantic import BaseModel, BeforeValidator, Field, WrapValidator

from .checks import DATASET_CHECKS, DatasetCheck, build_dataset_checks
from .dataset import Dataset
from .errors import ConfigurationError, ConfigurationTypeError, InvalidNameError
from .index.names import validate_dataset_name, validate_repository_name
from .io_manager import AtdataIOManager
from .redact import redact, secrets_in
from .resolution import positive_int
from .resources import (
    AtdataIndexResource,
    LocalDiskStoreConfig,
    RepositoryConfig,
    S3DataStoreConfig,
    check_atmosphere_login,
    check_index_choice,
)

_T = TypeVar("_T")

# the conventions recommend marking new integration components as preview (a private Dagster marker)
_DAGSTER_PREVIEW: Optional[Callable[[Any], Any]] = getattr(importlib.import_module("dagster._annotations"), "preview", None)


def _preview(obj: _T) -> _T:
    """Dagster's ``preview`` mark on ``obj``, when this Dagster has it."""
    return obj if _DAGSTER_PREVIEW is None else _DAGSTER_PREVIEW(obj)

__all__ = [
    "AtdataIndexResourceComponent",
    "DatasetInput",
    "LocalDiskStoreModel",
    "RepositoryModel",
    "S3DataStoreModel",
    "WebDatasetComponent",
]


# --------------------------------------------------------------------------- text fields
def _number_to_text(value: Any) -> Any:
    # Dagster renders every YAML string as a native Jinja template, so "1" arrives as 1
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value


#: a string field that also accepts what Dagster's template rendering made of "1" or "2024"
Text = Annotated[str, BeforeValidator(_number_to_text)]


def _doc(description: str, examples: Optional[list[str]] = None) -> dg.Resolver:
    """The description (and examples) of a field in the YAML schema ``dg`` shows.

    Written as ``Annotated[T, _doc("...")]``: Dagster's derived YAML model drops a
    ``Field(description=...)`` on fields with a default (dagster 1.13.28); a default
    ``Resolver`` carrying the description keeps it.
    """
    return dg.Resolver.default(description=description, examples=examples)


def _doc_of(config: type[dg.Config], field: str) -> dg.Resolver:
    """:func:`_doc` with the description the resource config model gives ``field`` (written once)."""
    description = config.model_fields[field].description
    if not description:  # pragma: no cover - guarded by the schema test
        raise ConfigurationError(f"{config.__name__}.{field} has no description to show in the YAML schema")
    return _doc(description)


def _fields_of(model: BaseModel, config: type[dg.Config]) -> dict[str, Any]:
    """The values of ``model`` for every field of the resource config model ``config``."""
    return {name: getattr(model, name) for name in config.model_fields if name in type(model).model_fields}


# --------------------------------------------------------------------------- secrets
_ENV_TEMPLATE = re.compile(
    r"""^\s*\{\{\s*env(?:\.(?P<attr>[A-Za-z_][A-Za-z0-9_]*)|\(\s*(?P<q>['"])(?P<call>[A-Za-z_][A-Za-z0-9_]*)(?P=q)\s*\))\s*\}\}\s*$"""
)


def _env_template_to_envvar(context: dg.ResolutionContext, value: Any) -> Any:
    """YAML resolver of a secret field: ``"{{ env.NAME }}"`` -> ``dg.EnvVar("NAME")``.

    The template is never evaluated, so the value of the variable is not read when the
    definitions load; any other string is kept as written and checked in ``build_defs``.
    """
    if isinstance(value, str):
        m = _ENV_TEMPLATE.match(value)
        if m:
            return dg.EnvVar(m.group("attr") or m.group("call"))
    return value


def _keep_envvar(value: Any, handler: Callable[[Any], Any]) -> Any:
    # pydantic turns a str subclass into a plain str; an EnvVar must stay an EnvVar
    if isinstance(value, dg.EnvVar):
        return value
    return handler(value)


#: a field holding a secret: ``Optional[str]`` that keeps ``dg.EnvVar`` values
SecretText = Annotated[Optional[str], WrapValidator(_keep_envvar)]


def _secret(description: str) -> dg.Resolver:
    """The YAML resolver of a :data:`SecretText` field: ``'{{ env.NAME }}'`` becomes ``dg.EnvVar``."""
    return dg.Resolver(
        _env_template_to_envvar,
        model_field_type=str,
        inject_before_resolve=False,
        description=description,
        examples=["{{ env.NAME }}"],
    )


_SECRET_DSN = _secret(
    "PostgreSQL DSN ('postgresql://user@host/db'). If it holds a password write it as "
    "'{{ env.INDEX_DSN }}': it becomes dagster.EnvVar and is read only at run time."
)
_SECRET_REDIS = _secret(
    "Redis URL ('redis://host:6379/0'). If it holds a password write it as "
    "'{{ env.INDEX_REDIS_URL }}': it becomes dagster.EnvVar and is read only at run time."
)
_SECRET_KEY = _secret("S3 secret access key; must be '{{ env.NAME }}' (becomes dagster.EnvVar, never a literal).")
_SECRET_TOKEN = _secret("S3 session token; must be '{{ env.NAME }}' (becomes dagster.EnvVar, never a literal).")
_SECRET_ACCESS_KEY_ID = _secret(
    "S3 access key id: '{{ env.NAME }}' (becomes dagster.EnvVar) or a literal; None uses the default AWS credential chain."
)
_SECRET_PASSWORD = _secret(
    "ATProto app password of atmosphere_handle; must be '{{ env.NAME }}' (becomes dagster.EnvVar, never a literal)."
)


def _check_secret(where: str, value: Optional[str], *, url: bool = False, literal_ok: bool = False) -> None:
    """Reject a secret that would end up in the definitions as plain text."""
    if value is None or isinstance(value, dg.EnvVar):
        return
    if not isinstance(value, str):
        raise ConfigurationTypeError(f"{where} must be a string or '{{{{ env.NAME }}}}', got {type(value).__name__}")
    if "{{" in value or "{%" in value:
        raise ConfigurationError(
            f"{where} is the template {redact(value)!r}; a secret must be exactly '{{{{ env.NAME }}}}' (one environment "
            "variable holding the whole value) so it becomes dagster.EnvVar and is never resolved into the definitions"
        )
    if url:
        if secrets_in(value):  # user:pw@, ?password=, password= (libpq key/value)
            raise ConfigurationError(
                f"{where} holds a password in plain text; put the whole URL in an environment variable and "
                "write '{{ env.INDEX_DSN }}' (or pass dagster.EnvVar('INDEX_DSN') in Python)"
            )
        return
    if not literal_ok and value:
        raise ConfigurationError(
            f"{where} is a literal secret; write it as '{{{{ env.NAME }}}}' (YAML) or dagster.EnvVar('NAME') "
            "(Python) so its value is read at run time and never stored in the definitions"
        )


# --------------------------------------------------------------------------- store / repo models
# The YAML models declare the fields of the resource config models they become (the
# descriptions are the config models'); only their YAML forms differ: secrets resolve
# '{{ env.NAME }}' to dagster.EnvVar and numbers-as-text are accepted.
class LocalDiskStoreModel(dg.Model, dg.Resolvable):
    """Shards on the local filesystem."""

    kind: Annotated[Literal["local"], _doc_of(LocalDiskStoreConfig, "kind")] = "local"
    root: Annotated[Optional[str], _doc_of(LocalDiskStoreConfig, "root")] = None

    def to_config(self, where: str) -> LocalDiskStoreConfig:
        """The ``LocalDiskStoreConfig`` this declares."""
        return LocalDiskStoreConfig(**_fields_of(self, LocalDiskStoreConfig))


class S3DataStoreModel(dg.Model, dg.Resolvable):
    """Shards in an S3 bucket (AWS or any S3-compatible server)."""

    kind: Annotated[Literal["s3"], _doc_of(S3DataStoreConfig, "kind")] = "s3"
    bucket: Annotated[Text, _doc_of(S3DataStoreConfig, "bucket")]
    endpoint_url: Annotated[Optional[str], _doc_of(S3DataStoreConfig, "endpoint_url")] = None
    region_name: Annotated[Optional[str], _doc_of(S3DataStoreConfig, "region_name")] = None
    aws_access_key_id: Annotated[SecretText, _SECRET_ACCESS_KEY_ID] = None
    aws_secret_access_key: Annotated[SecretText, _SECRET_KEY] = None
    aws_session_token: Annotated[SecretText, _SECRET_TOKEN] = None
    prefix: Annotated[Text, _doc_of(S3DataStoreConfig, "prefix")] = ""

    def to_config(self, where: str) -> S3DataStoreConfig:
        """The ``S3DataStoreConfig`` this declares; the secret key and token must be ``'{{ env.NAME }}'``."""
        _check_secret(f"{where}.aws_access_key_id", self.aws_access_key_id, literal_ok=True)
        _check_secret(f"{where}.aws_secret_access_key", self.aws_secret_access_key)
        _check_secret(f"{where}.aws_session_token", self.aws_session_token)
        return S3DataStoreConfig(**_fields_of(self, S3DataStoreConfig))


_STORE_DESCRIPTION = (
    "Where shards are written: {kind: local, root: ...} (default ~/.atdata/data) or "
    "{kind: s3, bucket: ..., endpoint_url: ..., aws_secret_access_key: '{{ env.S3_SECRET }}'}."
)

DataStoreModel = Annotated[Union[LocalDiskStoreModel, S3DataStoreModel], Field(discriminator="kind")]


def _store_config(store: Optional[Union[LocalDiskStoreModel, S3DataStoreModel]], where: str) -> Any:
    return LocalDiskStoreConfig() if store is None else store.to_config(where)


class RepositoryModel(dg.Model, dg.Resolvable):
    """A named repository: its own index (one of path, dsn, redis_url) and data store."""

    path: Annotated[Optional[str], _doc_of(RepositoryConfig, "path")] = None
    dsn: Annotated[SecretText, _SECRET_DSN] = None
    redis_url: Annotated[SecretText, _SECRET_REDIS] = None
    data_store: Annotated[Optional[DataStoreModel], _doc(_STORE_DESCRIPTION)] = None

    def to_config(self, where: str) -> RepositoryConfig:
        """The ``RepositoryConfig`` this declares (exactly one index; secrets as ``dagster.EnvVar``)."""
        _check_secret(f"{where}.dsn", self.dsn, url=True)
        _check_secret(f"{where}.redis_url", self.redis_url, url=True)
        check_index_choice(where, self.path, self.dsn, self.redis_url, required=True)
        return RepositoryConfig(
            **_fields_of(self, RepositoryConfig) | {"data_store": _store_config(self.data_store, f"{where}.data_store")}
        )


def _check_key(where: str, value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
        raise InvalidNameError(
            f"{where} {value!r} is not a valid Dagster resource key; use letters, digits and '_', "
            "not starting with a digit (e.g. 'atdata_index')"
        )
    return value

# --------------------------------------------------------------------------- scaffolding (`dg scaffold defs`)
class IndexScaffoldParams(BaseModel):
    """Options of ``dg scaffold defs atdata_dagster.components.AtdataIndexResourceComponent``."""

    path: Optional[str] = Field(default=None, description="SQLite index file; default ~/.atdata/index.db.")
    data_root: Optional[str] = Field(default=None, description="Directory for the shards; default ~/.atdata/data.")


class AtdataIndexScaffolder(dg.Scaffolder[IndexScaffoldParams]):
    """Writes a defs.yaml for an embedded SQLite index with shards on local disk."""

    @classmethod
    def get_scaffold_params(cls) -> type[IndexScaffoldParams]:
        return IndexScaffoldParams

    def scaffold(self, request: dg.ScaffoldRequest[IndexScaffoldParams]) -> None:
        params = request.params or IndexScaffoldParams()
        attributes: dict[str, Any] = {"resource_key": "atdata_index", "io_manager_key": "io_manager"}
        if params.path:
            attributes["path"] = params.path
        if params.data_root:
            attributes["data_store"] = {"kind": "local", "root": params.data_root}
        attributes["atmosphere"] = False
        dg.scaffold_component(request, attributes)


class DatasetScaffoldParams(BaseModel):
    """Options of ``dg scaffold defs atdata_dagster.components.WebDatasetComponent``."""

    asset_key: Optional[str] = Field(default=None, description="Asset key, e.g. 'digits/raw'; default: the folder name.")
    fn: Optional[str] = Field(default=None, description="Sample-producing callable 'package.module:function'.")


class WebDatasetScaffolder(dg.Scaffolder[DatasetScaffoldParams]):
    """Writes a defs.yaml for one dataset asset, to be completed with the real ``fn``."""

    @classmethod
    def get_scaffold_params(cls) -> type[DatasetScaffoldParams]:
        return DatasetScaffoldParams

    def scaffold(self, request: dg.ScaffoldRequest[DatasetScaffoldParams]) -> None:
        params = request.params or DatasetScaffoldParams()
        dg.scaffold_component(request, {
            "asset_key": params.asset_key or request.target_path.name,
            "fn": params.fn or "my_package.samples:make_samples",
            "code_version": "1",
            "checks": True,
        })


# --------------------------------------------------------------------------- index resource


@_preview
@dg.scaffold_with(AtdataIndexScaffolder)
class AtdataIndexResourceComponent(dg.Component, dg.Model, dg.Resolvable):
    """An atdata dataset index (SQLite, PostgreSQL or Redis; disk or S3 shards) and its IO manager.

    Binds an ``AtdataIndexResource`` to ``resource_key`` and an ``AtdataIOManager`` using it
    to ``io_manager_key`` (the key ``WebDatasetComponent`` assets store through). At most
    one of ``path``, ``dsn`` and ``redis_url``; none means SQLite at ``~/.atdata/index.db``.
    The fields other than the two keys and the IO manager defaults are those of
    ``AtdataIndexResource`` (same descriptions).
    """

    resource_key: Annotated[str, _doc("Resource key the AtdataIndexResource is bound to (promotion jobs and sensors use 'atdata_index').")] = "atdata_index"
    io_manager_key: Annotated[Optional[str], _doc("Resource key of an AtdataIOManager on this index ('io_manager' makes it the default for every asset); null for none.")] = "io_manager"
    path: Annotated[Optional[str], _doc_of(AtdataIndexResource, "path")] = None
    dsn: Annotated[SecretText, _SECRET_DSN] = None
    redis_url: Annotated[SecretText, _SECRET_REDIS] = None
    data_store: Annotated[Optional[DataStoreModel], _doc(_STORE_DESCRIPTION)] = None
    repos: Annotated[dict[str, RepositoryModel], _doc(
        "Named repositories mounted next to 'local': name -> {path|dsn|redis_url, data_store}. "
        "An asset writes to one with its 'repo' field."
    )] = Field(default_factory=dict)
    atmosphere: Annotated[bool, _doc_of(AtdataIndexResource, "atmosphere")] = True
    atmosphere_service_url: Annotated[Optional[str], _doc_of(AtdataIndexResource, "atmosphere_service_url")] = None
    atmosphere_handle: Annotated[Optional[str], _doc_of(AtdataIndexResource, "atmosphere_handle")] = None
    atmosphere_password: Annotated[SecretText, _SECRET_PASSWORD] = None
    default_maxcount: Annotated[int, _doc("IO manager default: maximum samples per shard (an asset's maxcount overrides).")] = 10000
    default_maxsize: Annotated[Optional[int], _doc("IO manager default: maximum bytes per shard, null for no limit (an asset's maxsize overrides).")] = None
    preview_rows: Annotated[int, _doc_of(AtdataIOManager, "preview_rows")] = 5

    def build_resource(self) -> AtdataIndexResource:
        """The configured ``AtdataIndexResource`` (secrets as ``dagster.EnvVar``)."""
        where = type(self).__name__
        _check_secret(f"{where}.dsn", self.dsn, url=True)
        _check_secret(f"{where}.redis_url", self.redis_url, url=True)
        _check_secret(f"{where}.atmosphere_password", self.atmosphere_password)
        check_index_choice(where, self.path, self.dsn, self.redis_url)
        check_atmosphere_login(where, self.atmosphere_handle, self.atmosphere_password)
        repos = {}
        for name, repo in self.repos.items():
            validate_repository_name(name, where=f"{where}.repos:")
            repos[name] = repo.to_config(f"{where}.repos[{name!r}]")
        return AtdataIndexResource(
            **_fields_of(self, AtdataIndexResource)
            | {"data_store": _store_config(self.data_store, f"{where}.data_store"), "repos": repos}
        )

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        """The index resource and, unless ``io_manager_key`` is null, an ``AtdataIOManager`` on it."""
        where = type(self).__name__
        _check_key(f"{where}.resource_key", self.resource_key)
        positive_int(where, "default_maxcount", self.default_maxcount)
        positive_int(where, "default_maxsize", self.default_maxsize)
        if self.preview_rows < 0:
            raise ConfigurationError(f"{where}.preview_rows must be >= 0, got {self.preview_rows}")
        resource = self.build_resource()
        resources: dict[str, Any] = {self.resource_key: resource}
        if self.io_manager_key:
            _check_key(f"{where}.io_manager_key", self.io_manager_key)
            if self.io_manager_key == self.resource_key:
                raise ConfigurationError(f"{where}: resource_key and io_manager_key must differ (both {self.resource_key!r})")
            resources[self.io_manager_key] = AtdataIOManager(
                index=resource, maxcount=self.default_maxcount, maxsize=self.default_maxsize,
                preview_rows=self.preview_rows,
            )
        return dg.Definitions(resources=resources)

# --------------------------------------------------------------------------- dataset asset
_KEY_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def _parse_asset_key(where: str, value: Any) -> dg.AssetKey:
    """``"digits/raw"`` (or a list of segments) -> ``AssetKey(["digits", "raw"])``."""
    if isinstance(value, dg.AssetKey):
        parts = list(value.path)
    elif isinstance(value, str):
        parts = value.split("/")
    elif isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        raise ConfigurationTypeError(f"{where} must be an asset key like 'digits/raw', got {type(value).__name__}")
    bad = [p for p in parts if not isinstance(p, str) or not _KEY_SEGMENT.fullmatch(p)]
    if not parts or bad:
        raise InvalidNameError(
            f"{where} {value!r} is not a valid asset key: write '/'-separated segments of letters, digits, "
            "'_', '-' and '.', none empty and none starting with '.' or '-', e.g. 'digits/raw'"
        )
    return dg.AssetKey(parts)


def _import_object(where: str, ref: Any) -> Any:
    """Import ``"package.module:attr.path"``."""
    if not isinstance(ref, str) or ref.count(":") != 1:
        raise ConfigurationError(
            f"{where} {ref!r} must be a reference 'package.module:name', e.g. 'my_pkg.samples:make_digits'"
        )
    module_name, _, attr_path = ref.partition(":")
    if not module_name or not attr_path:
        raise ConfigurationError(f"{where} {ref!r} must be 'package.module:name' with both parts, e.g. 'my_pkg.samples:make_digits'")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(
            f"{where} {ref!r}: cannot import module {module_name!r} ({exc}); install the package or fix the module path"
        ) from exc
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigurationError(
                f"{where} {ref!r}: module {module_name!r} has no attribute {attr_path!r}; check the name after ':'"
            ) from None
    return obj


class DatasetInput(dg.Model):
    """An upstream dataset read by the asset (passed to ``fn`` as a lazy ``Dataset``)."""

    key: str = Field(description="Asset key of the upstream dataset asset, '/'-separated, e.g. 'digits/raw'.")
    sample_type: Optional[str] = Field(
        default=None,
        description="Sample class 'package.module:Class' to read it as (Dataset[Class]); null decodes the stored schema.",
    )
    allow_missing_partitions: bool = Field(
        default=False,
        description="When fanning in several upstream partitions, skip the ones never materialized instead of failing.",
    )


_RESERVED_PARAMS = frozenset({"context", "partition_key"})


@_preview
@dg.scaffold_with(WebDatasetScaffolder)
class WebDatasetComponent(dg.Component, dg.Model, dg.Resolvable):
    """A typed WebDataset asset: samples from a Python callable, stored as shards plus an index entry.

    ``fn`` returns (or yields) packable samples, or a ``Dataset`` of existing shards. It is
    called with keyword arguments it declares: one per ``ins`` name (a lazy
    ``Dataset`` of that upstream asset's exact entry), ``context``
    (``AssetExecutionContext``) and ``partition_key`` (``None`` when unpartitioned).
    The output goes through the ``AtdataIOManager`` at ``io_manager_key``.
    """

    asset_key: Annotated[Text, _doc("Asset key, '/'-separated segments, e.g. 'digits/raw'. The dataset name defaults to it.")]
    fn: Annotated[str, _doc(
        "Python callable producing the samples, 'package.module:function'. It may take the ins names, "
        "'context' and 'partition_key' as keyword parameters.",
        examples=["my_pkg.samples:make_digits"],
    )]
    ins: Annotated[dict[str, Union[str, DatasetInput]], _doc(
        "Upstream datasets passed to fn: parameter name -> asset key ('digits/raw') or "
        "{key, sample_type, allow_missing_partitions}."
    )] = Field(default_factory=dict)
    deps: Annotated[list[Text], _doc("Asset keys this asset depends on without reading them (ordering and lineage in Dagster only).")] = Field(default_factory=list)
    group_name: Annotated[Optional[Text], _doc("Dagster asset group, e.g. 'digits'.")] = None
    description: Annotated[Optional[Text], _doc("Asset description shown in the Dagster UI.")] = None
    code_version: Annotated[Optional[Text], _doc("Code version: bump it when fn changes so Dagster marks the asset stale; recorded in the entry's lineage.")] = None
    partitions: Annotated[Optional[list[Text]], _doc("Static partition keys, e.g. [train, test]: one dataset per key, named '<asset>/partition=<key>'.")] = None
    promote: Annotated[bool, _doc("Mark every entry for the promotion sensor (publish to the atmosphere).")] = False
    maxcount: Annotated[Optional[int], _doc("Maximum samples per shard (default: the IO manager's).")] = None
    maxsize: Annotated[Optional[int], _doc("Maximum bytes per shard (default: the IO manager's, no limit).")] = None
    manifest: Annotated[Optional[bool], _doc("Write per-shard manifest sidecars (default: the IO manager's).")] = None
    dataset_name: Annotated[Optional[Text], _doc("Dataset name in the index instead of the asset key path ('atdata/name'), e.g. 'mnist/raw'.")] = None
    repo: Annotated[Optional[Text], _doc("Repository to write to instead of 'local' ('atdata/repo'): a name in the index's repos.")] = None
    io_manager_key: Annotated[str, _doc("Resource key of the AtdataIOManager that stores this asset (see AtdataIndexResourceComponent).")] = "io_manager"
    checks: Annotated[Union[bool, list[DatasetCheck]], _doc(
        "Asset checks to add: true for all (checksums, sample_count, schema), or a list of them."
    )] = False
    blocking_checks: Annotated[bool, _doc("Make the checks blocking (a failed check stops downstream assets).")] = False
    tags: Annotated[dict[str, Text], _doc("Asset tags.")] = Field(default_factory=dict)
    owners: Annotated[list[str], _doc("Asset owners (emails or 'team:name').")] = Field(default_factory=list)
    metadata: Annotated[dict[str, Any], _doc("Extra definition metadata for the asset.")] = Field(default_factory=dict)

    # ------------------------------------------------------------------ validation
    def _where(self) -> str:
        return f"WebDatasetComponent {self.asset_key!r}"

    def _metadata(self) -> dict[str, Any]:
        where = self._where()
        meta = dict(self.metadata)
        clash = sorted(k for k in meta if k.startswith("atdata/"))
        if clash:
            raise ConfigurationError(
                f"{where}: metadata keys {clash} are reserved; use the fields promote, maxcount, maxsize, "
                "manifest, dataset_name and repo instead"
            )
        fields: dict[str, Any] = {
            "atdata/maxcount": positive_int(where, "maxcount", self.maxcount),
            "atdata/maxsize": positive_int(where, "maxsize", self.maxsize),
            "atdata/manifest": self.manifest,
            "atdata/promote": self.promote or None,
            "atdata/name": self.dataset_name,
            "atdata/repo": self.repo,
        }
        if self.dataset_name is not None:
            try:
                validate_dataset_name(self.dataset_name)
            except InvalidNameError as exc:
                raise InvalidNameError(f"{where}: dataset_name: {exc}") from None
        if self.repo is not None and (not self.repo or "/" in self.repo):
            raise InvalidNameError(f"{where}: repo {self.repo!r} must be a repository name from the index's repos, e.g. 'lab'")
        meta.update((k, v) for k, v in fields.items() if v is not None)
        return meta

    def _inputs(self) -> dict[str, dg.AssetIn]:
        where = self._where()
        out: dict[str, dg.AssetIn] = {}
        for name, spec in self.ins.items():
            if not name.isidentifier() or keyword.iskeyword(name) or name in _RESERVED_PARAMS:
                raise InvalidNameError(
                    f"{where}: input name {name!r} must be a Python identifier other than "
                    f"{sorted(_RESERVED_PARAMS)}; it is the keyword fn receives the dataset as"
                )
            if isinstance(spec, str):
                spec = DatasetInput(key=spec)
            key = _parse_asset_key(f"{where}: ins.{name}", spec.key)
            dagster_type: Any = Any
            if spec.sample_type:
                cls = _import_object(f"{where}: ins.{name}.sample_type", spec.sample_type)
                if not isinstance(cls, type):
                    raise ConfigurationTypeError(f"{where}: ins.{name}.sample_type {spec.sample_type!r} is not a class")
                dagster_type = Dataset[cls]  # type: ignore[valid-type]
            meta = {"allow_missing_partitions": True} if spec.allow_missing_partitions else None
            out[name] = dg.AssetIn(key=key, dagster_type=dagster_type, metadata=meta)
        return out

    def _callable(self, inputs: Mapping[str, Any]) -> tuple[Callable[..., Any], frozenset[str], bool]:
        """(fn, the keyword parameters it declares, whether it takes **kwargs)."""
        where = self._where()
        fn = _import_object(f"{where}: fn", self.fn)
        if not callable(fn):
            raise ConfigurationTypeError(f"{where}: fn {self.fn!r} is a {type(fn).__name__}, not a callable")
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):  # builtins without a signature: pass only the inputs
            return fn, frozenset(inputs), False
        params = sig.parameters
        var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        names = frozenset(
            n for n, p in params.items()
            if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        )
        offered = set(inputs) | _RESERVED_PARAMS
        required = [  # everything is passed by keyword, so a positional-only parameter is never supplied
            n for n, p in params.items()
            if p.default is inspect.Parameter.empty
            and p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
            and (n not in offered or p.kind is inspect.Parameter.POSITIONAL_ONLY)
        ]
        if required:
            raise ConfigurationError(
                f"{where}: fn {self.fn!r} requires parameters {required} that nothing supplies; it receives "
                f"only the ins names {sorted(inputs)}, 'context' and 'partition_key' (add them to ins or give them defaults)"
            )
        unread = sorted(set(inputs) - names) if not var_kw else []
        if unread:
            raise ConfigurationError(
                f"{where}: fn {self.fn!r} has no parameter for the inputs {unread}; add one per ins name (or **kwargs)"
            )
        return fn, names, var_kw

    # ------------------------------------------------------------------ build
    def build_asset(self) -> dg.AssetsDefinition:
        """The dataset asset this component declares."""
        where = self._where()
        key = _parse_asset_key(f"{where}: asset_key", self.asset_key)
        inputs = self._inputs()
        fn, accepts, var_kw = self._callable(inputs)
        deps = [_parse_asset_key(f"{where}: deps", d) for d in self.deps]
        overlap = set(deps) & {i.key for i in inputs.values()}
        if overlap:
            raise ConfigurationError(f"{where}: {sorted(k.to_user_string() for k in overlap)} are in both ins and deps; keep them in ins only")
        partitions_def = None
        if self.partitions is not None:
            if not self.partitions or len(set(self.partitions)) != len(self.partitions):
                raise ConfigurationError(f"{where}: partitions must be a non-empty list of distinct keys, got {self.partitions}")
            partitions_def = dg.StaticPartitionsDefinition(list(self.partitions))
        metadata = self._metadata()
        _check_key(f"{where}: io_manager_key", self.io_manager_key)
        fn_ref = self.fn
        io_manager_key = self.io_manager_key

        @dg.asset(
            key=key,
            ins=inputs,
            deps=deps or None,
            group_name=self.group_name,
            description=self.description or _first_line(fn.__doc__) or f"Samples from {fn_ref}.",
            code_version=self.code_version,
            kinds={"webdataset"},
            partitions_def=partitions_def,
            io_manager_key=self.io_manager_key,
            required_resource_keys={self.io_manager_key},
            metadata=metadata,
            tags=dict(self.tags) or None,
            owners=list(self.owners) or None,
        )
        # no return annotation: Dagster would read it as the output's type and refuse dg.Output
        def _dataset_asset(context: dg.AssetExecutionContext, **upstream: Any):
            io_manager = getattr(context.resources, io_manager_key, None)
            if not isinstance(io_manager, AtdataIOManager):
                raise ConfigurationError(
                    f"{where}: resource {io_manager_key!r} is {type(io_manager).__name__}, not an AtdataIOManager, "
                    "so the samples would not become a dataset; declare an AtdataIndexResourceComponent "
                    f"(io_manager_key: {io_manager_key}) or bind AtdataIOManager(index=...) to that key"
                )
            kwargs: dict[str, Any] = {n: v for n, v in upstream.items() if var_kw or n in accepts}
            if var_kw or "context" in accepts:
                kwargs["context"] = context
            if var_kw or "partition_key" in accepts:
                kwargs["partition_key"] = context.partition_key if context.has_partition_key else None
            result = fn(**kwargs)
            if isinstance(result, Iterator) and not isinstance(result, (dg.Output, dg.MaterializeResult)):
                # a bare generator would be read by Dagster as an event stream
                return dg.Output(result)
            return result

        return _dataset_asset

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        asset = self.build_asset()
        checks: list[dg.AssetChecksDefinition] = []
        if self.checks:
            names: list[str | DatasetCheck] = list(DATASET_CHECKS) if self.checks is True else list(dict.fromkeys(self.checks))
            checks = build_dataset_checks(asset, resource_key=self.io_manager_key, checks=names, blocking=self.blocking_checks)
        return dg.Definitions(assets=[asset], asset_checks=checks or None)


def _first_line(doc: Optional[str]) -> Optional[str]:
    if not doc:
        return None
    line = doc.strip().splitlines()[0].strip()
    return line or None
