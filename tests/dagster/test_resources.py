"""AtdataIndexResource: typed configuration, lifecycle, repositories, EnvVar secrets."""

import json
import uuid

import dagster as dg
import pytest

from atdata_dagster.errors import ConfigurationError
from atdata_dagster.io_manager import AtdataIOManager
from atdata_dagster.resources import (
    AtdataIndexResource,
    LocalDiskStoreConfig,
    RepositoryConfig,
    S3DataStoreConfig,
)

from .helpers import materialization, rows


@pytest.mark.parametrize(
    "model", [AtdataIndexResource, AtdataIOManager, LocalDiskStoreConfig, S3DataStoreConfig, RepositoryConfig]
)
def test_every_config_field_has_a_description(model):
    """Descriptions show in the Dagster UI and in component schemas."""
    fields = model.model_fields
    assert fields
    for name, field in fields.items():
        assert field.description, f"{model.__name__}.{name} has no description"


def test_definition_time_touches_neither_disk_nor_network(tmp_path):
    resource = AtdataIndexResource(
        path=str(tmp_path / "index.db"),
        data_store=S3DataStoreConfig(bucket="b", endpoint_url="http://127.0.0.1:9", aws_secret_access_key=dg.EnvVar("NOPE")),
        atmosphere_service_url="http://127.0.0.1:9",
        atmosphere_handle="x.test",
        atmosphere_password=dg.EnvVar("NOPE_EITHER"),
    )

    @dg.asset
    def a():  # pragma: no cover
        return rows(1)

    defs = dg.Definitions(assets=[a], resources={"io_manager": AtdataIOManager(index=resource), "atdata": resource})
    dg.Definitions.validate_loadable(defs)
    assert list(tmp_path.iterdir()) == []  # no index file, no data dir
    assert "NOPE" not in resource.describe()


def test_path_alone_is_the_embedded_default_with_data_under_the_home_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    resource = AtdataIndexResource(path=str(tmp_path / "index.db"))
    index = resource.build_index()
    try:
        assert index.provider.kind == "sqlite"
        assert str(index.data_store.root) == str((tmp_path / "home" / ".atdata" / "data").resolve())
        entry = index.write_samples(rows(2), name="x")
        assert entry.data_urls[0].startswith(str(tmp_path / "home" / ".atdata" / "data"))
        assert (tmp_path / "index.db").exists()
    finally:
        index.close()


def test_setup_opens_the_index_and_teardown_closes_it(tmp_path, instance, monkeypatch):
    from atdata_dagster.index.index import Index

    closed = []
    original = Index.close
    monkeypatch.setattr(Index, "close", lambda self: (closed.append(self), original(self))[1])
    resource = AtdataIndexResource(path=str(tmp_path / "i.db"), data_store=LocalDiskStoreConfig(root=str(tmp_path / "d")), atmosphere=False)
    seen = []

    @dg.asset
    def uses_index(atdata: AtdataIndexResource):
        index = atdata.get_index()
        seen.append(index)
        assert atdata.get_index() is index  # one Index per run
        index.write_samples(rows(3), name="direct")

    assert dg.materialize([uses_index], resources={"atdata": resource}, instance=instance).success
    assert seen and seen[0] in closed
    assert seen[0].atmosphere is None  # atmosphere=False


def test_only_one_provider_may_be_configured_and_it_fails_when_the_resource_is_built(tmp_path):
    # built = when the definitions load: nothing is opened, and an EnvVar counts as set
    with pytest.raises(ConfigurationError, match="only one of path.*got path, redis_url"):
        AtdataIndexResource(path=str(tmp_path / "i.db"), redis_url="redis://127.0.0.1:1/0")
    with pytest.raises(ConfigurationError, match="got path, dsn"):
        AtdataIndexResource(path=str(tmp_path / "i.db"), dsn=dg.EnvVar("ATDATA_INDEX_DSN"))
    with pytest.raises(ConfigurationError, match=r"repos\['lab'\] needs an index"):
        AtdataIndexResource(repos={"lab": RepositoryConfig()})
    with pytest.raises(ConfigurationError, match="set both atmosphere_handle and atmosphere_password"):
        AtdataIndexResource(atmosphere_handle="lab.example.com")
    assert list(tmp_path.iterdir()) == []


def test_definitions_with_an_impossible_index_fail_to_load(tmp_path):
    code = (
        "import dagster as dg\n"
        "from atdata_dagster import AtdataIndexResource, AtdataIOManager\n"
        f"index = AtdataIndexResource(path={str(tmp_path / 'i.db')!r}, dsn=dg.EnvVar('DSN'))\n"
        "defs = dg.Definitions(resources={'io_manager': AtdataIOManager(index=index)})\n"
    )
    (tmp_path / "bad_defs.py").write_text(code)
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", "import bad_defs"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode != 0
    assert "ConfigurationError: AtdataIndexResource: set only one of path" in out.stderr


def test_named_repositories_are_mounted_with_their_own_store(tmp_path):
    resource = AtdataIndexResource(
        path=str(tmp_path / "i.db"),
        data_store=LocalDiskStoreConfig(root=str(tmp_path / "local")),
        repos={"lab": RepositoryConfig(path=str(tmp_path / "lab.db"), data_store=LocalDiskStoreConfig(root=str(tmp_path / "lab")))},
        atmosphere=False,
    )
    index = resource.build_index()
    try:
        assert sorted(index.repos) == ["lab", "local"]
        entry = index.write_samples(rows(2), name="lab/x")
        assert entry.data_urls[0].startswith(str(tmp_path / "lab"))
    finally:
        index.close()
    with pytest.raises(ConfigurationError, match="needs an index"):
        AtdataIndexResource(path=str(tmp_path / "i.db"), repos={"bad": RepositoryConfig()}).build_index()


@pytest.mark.redis
def test_redis_url_gives_a_redis_index(redis_url, tmp_path):
    resource = AtdataIndexResource(redis_url=redis_url, data_store=LocalDiskStoreConfig(root=str(tmp_path / "d")), atmosphere=False)
    index = resource.build_index()
    try:
        assert index.provider.kind == "redis"
        written = index.write_samples(rows(2), name="r")
        assert index.get_dataset("r").cid == written.cid
    finally:
        index.close()


@pytest.mark.postgres
def test_dsn_gives_a_postgres_index(postgres_dsn, tmp_path):
    resource = AtdataIndexResource(dsn=postgres_dsn, data_store=LocalDiskStoreConfig(root=str(tmp_path / "d")), atmosphere=False)
    index = resource.build_index()
    try:
        assert index.provider.kind == "postgres"
        written = index.write_samples(rows(2), name="p")
        assert index.get_dataset("p").cid == written.cid
    finally:
        index.close()


def _everything_logged(instance, run_id) -> str:
    parts = []
    for record in instance.all_logs(run_id):
        parts.append(record.user_message or "")
        parts.append(repr(record.dagster_event))
    return "\n".join(parts)


def test_envvar_secrets_are_resolved_and_never_recorded(tmp_path, instance, monkeypatch, s3_moto, moto_bucket):
    s3_secret = f"s3-secret-{uuid.uuid4().hex}"
    key_id = f"AKIA{uuid.uuid4().hex[:12].upper()}"
    atp_password = f"atp-pw-{uuid.uuid4().hex}"
    monkeypatch.setenv("TEST_S3_KEY_ID", key_id)
    monkeypatch.setenv("TEST_S3_SECRET", s3_secret)
    monkeypatch.setenv("TEST_ATP_PASSWORD", atp_password)
    resource = AtdataIndexResource(
        path=str(tmp_path / "index.db"),
        data_store=S3DataStoreConfig(
            bucket=moto_bucket,
            endpoint_url=s3_moto["endpoint_url"],
            region_name=s3_moto["region_name"],
            aws_access_key_id=dg.EnvVar("TEST_S3_KEY_ID"),
            aws_secret_access_key=dg.EnvVar("TEST_S3_SECRET"),
            prefix="team",
        ),
        atmosphere_service_url="http://127.0.0.1:9",  # never contacted: nothing is promoted
        atmosphere_handle="alice.test",
        atmosphere_password=dg.EnvVar("TEST_ATP_PASSWORD"),
    )
    probe = {}

    @dg.asset
    def up(atdata: AtdataIndexResource):
        probe["s3"] = (atdata.data_store.aws_access_key_id, atdata.data_store.aws_secret_access_key)
        probe["atp"] = atdata.atmosphere_password
        probe["client_password"] = atdata.get_index().atmosphere.client._password
        return rows(5)

    @dg.asset
    def down(up):
        return list(up.ordered())

    result = dg.materialize(
        [up, down], resources={"io_manager": AtdataIOManager(index=resource), "atdata": resource}, instance=instance
    )
    assert result.success
    assert probe == {"s3": (key_id, s3_secret), "atp": atp_password, "client_password": atp_password}
    mat = materialization(result, "up")
    assert mat.metadata["dagster/uri"].value.startswith(f"s3://{moto_bucket}/team/")

    recorded = [repr(materialization(result, k).metadata) for k in ("up", "down")]
    index = resource.build_index()
    try:
        recorded += [json.dumps(e.to_dict(), default=str) for e in index.list_entries()]
        assert len(index.list_entries()) == 2
    finally:
        index.close()
    recorded.append(_everything_logged(instance, result.run_id))
    recorded.append(repr(resource))
    recorded.append(repr(resource.data_store))
    for text in recorded:
        for secret in (s3_secret, atp_password):
            assert secret not in text


def test_envvar_inside_a_nested_repository_config_is_resolved(tmp_path, instance, monkeypatch):
    monkeypatch.setenv("TEST_LAB_DB", str(tmp_path / "lab.db"))
    resource = AtdataIndexResource(
        path=str(tmp_path / "i.db"),
        data_store=LocalDiskStoreConfig(root=str(tmp_path / "d")),
        repos={"lab": RepositoryConfig(path=dg.EnvVar("TEST_LAB_DB"), data_store=LocalDiskStoreConfig(root=str(tmp_path / "lab")))},
        atmosphere=False,
    )

    @dg.asset(metadata={"atdata/repo": "lab"})
    def in_lab():
        return rows(2)

    assert dg.materialize([in_lab], resources={"io_manager": AtdataIOManager(index=resource)}, instance=instance).success
    assert (tmp_path / "lab.db").exists()


def test_the_library_announces_its_version_to_dagster():
    from dagster_shared.libraries import DagsterLibraryRegistry

    import atdata_dagster.resources  # noqa: F401  (registration happens on import)

    assert "atdata-dagster" in DagsterLibraryRegistry.get()


def test_build_index_outside_a_run_reads_envvar_fields_from_the_environment(postgres_dsn, tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_INDEX_DSN", postgres_dsn)
    monkeypatch.setenv("TEST_LAB_DB", str(tmp_path / "lab.db"))
    resource = AtdataIndexResource(
        dsn=dg.EnvVar("TEST_INDEX_DSN"),
        data_store=LocalDiskStoreConfig(root=str(tmp_path / "d")),
        repos={"lab": RepositoryConfig(path=dg.EnvVar("TEST_LAB_DB"), data_store=LocalDiskStoreConfig(root=str(tmp_path / "lab")))},
        atmosphere=False,
    )
    index = resource.build_index()  # e.g. a script or notebook next to the definitions
    try:
        assert index.provider.kind == "postgres"
        assert index.write_samples(rows(2), name="outside").cid == index.get_dataset("outside").cid
        assert (tmp_path / "lab.db").exists()  # the repository opened at the variable's path
    finally:
        index.close()


def test_build_index_outside_a_run_names_every_unset_envvar(tmp_path, monkeypatch):
    monkeypatch.delenv("TEST_UNSET_DSN", raising=False)
    monkeypatch.delenv("TEST_UNSET_SECRET", raising=False)
    resource = AtdataIndexResource(
        dsn=dg.EnvVar("TEST_UNSET_DSN"),
        data_store=S3DataStoreConfig(bucket="b", aws_access_key_id="k", aws_secret_access_key=dg.EnvVar("TEST_UNSET_SECRET")),
        atmosphere=False,
    )
    with pytest.raises(ConfigurationError, match="TEST_UNSET_DSN, TEST_UNSET_SECRET.*not set"):
        resource.build_index()


@pytest.mark.parametrize(
    "build",
    [
        lambda: AtdataIndexResource(path="x.db", data_dir="data", atmosphere=False),  # data_dir is not an option
        lambda: AtdataIndexResource(path="x.db", data_store=LocalDiskStoreConfig(rot="data"), atmosphere=False),
        lambda: AtdataIOManager(index=AtdataIndexResource(path="x.db", atmosphere=False), max_count=5),
    ],
)
def test_a_misspelt_option_fails_when_the_definitions_load_instead_of_being_ignored(build):
    import pydantic

    with pytest.raises(pydantic.ValidationError, match="Extra inputs are not permitted"):
        build()
