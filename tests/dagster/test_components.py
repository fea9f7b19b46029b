"""The YAML components: datasets and the index declared in defs.yaml, loaded and materialized.

Most tests go through the real YAML path (``create_defs_folder_sandbox``: a throw-away
project whose ``defs/`` folder holds the ``defs.yaml`` files and a user module
``pipeline.py``), then materialize the assets into a real index and read back the
entries, lineage and metadata. The ``dg`` tests run the real ``dg`` command line
(``scripts/install-dg.sh`` installs it in ``.cache/dg-venv``) on a throw-away dg
project; without it they skip locally and fail under ``CI=true``.
"""

import json
import os
import subprocess
import sys
import textwrap
import uuid
from contextlib import contextmanager
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Iterator

import dagster as dg
import pytest
from dagster.components.testing import create_defs_folder_sandbox
from dagster.components.testing.utils import component_defs

from atdata_dagster.components import AtdataIndexResourceComponent, WebDatasetComponent
from atdata_dagster.errors import ConfigurationError, InvalidNameError
from atdata_dagster.io_manager import AtdataIOManager
from atdata_dagster.resources import AtdataIndexResource
from tests.dagster.helpers import materialization, md
from tests.fixtures.services import service_missing

ROOT = Path(__file__).resolve().parents[2]
DG = Path(os.environ.get("ATDATA_DG", ROOT / ".cache" / "dg-venv" / "bin" / "dg"))
INDEX_TYPE = "atdata_dagster.components.AtdataIndexResourceComponent"
DATASET_TYPE = "atdata_dagster.components.WebDatasetComponent"

# The user's code, as it would sit next to defs/ in a project. The sandbox and the dg
# project get it as pipeline.py; the Python-construction tests use this module's copy.
PIPELINE = '''
import numpy as np
from numpy.typing import NDArray

from atdata_dagster import packable


@packable
class Point:
    """A numbered point of one split."""

    idx: int
    split: str
    vec: NDArray[np.float32]


def make_points(partition_key=None):
    """Ten points per split."""
    split = partition_key or "all"
    for i in range(10):
        yield Point(idx=i, split=split, vec=np.full(3, i, np.float32))


def scale(points, context):
    """Every vector doubled."""
    context.log.info("scaling")
    return [Point(idx=p.idx, split=p.split, vec=p.vec * 2) for p in points.ordered()]


def evens(points, partition_key):
    return [p for p in points.ordered() if p.idx % 2 == 0 and p.split == partition_key]


def needs_other(points, other):
    return []


def ignores_inputs():
    return []
'''
exec(compile(PIPELINE, __file__ + ":PIPELINE", "exec"))  # Point, make_points, ... for the Python tests
HERE = __name__


# --------------------------------------------------------------------------- helpers
class Project:
    """A sandbox project: write defs.yaml files, then load or materialize them."""

    def __init__(self, sandbox: Any, tmp: Path):
        self.sandbox = sandbox
        self.tmp = tmp
        self.module = sandbox.project_name
        (sandbox.defs_folder_path.parent / "pipeline.py").write_text(PIPELINE)

    def fn(self, name: str) -> str:
        return f"{self.module}.pipeline:{name}"

    def add(self, folder: str, type_: str, attributes: dict) -> Path:
        cls = AtdataIndexResourceComponent if type_ == INDEX_TYPE else WebDatasetComponent
        return self.sandbox.scaffold_component(
            component_cls=cls, defs_path=folder, defs_yaml_contents={"type": type_, "attributes": attributes},
        )

    def add_index(self, **attributes: Any) -> Path:
        attrs = {
            "path": str(self.tmp / "index.db"),
            "data_store": {"kind": "local", "root": str(self.tmp / "data")},
            "atmosphere": False,
            **attributes,
        }
        return self.add("index", INDEX_TYPE, attrs)

    def add_dataset(self, folder: str, **attributes: Any) -> Path:
        return self.add(folder, DATASET_TYPE, attributes)

    @contextmanager
    def defs(self) -> Iterator[dg.Definitions]:
        with self.sandbox.build_all_defs() as defs:
            yield defs


@pytest.fixture
def project(tmp_path) -> Iterator[Project]:
    with create_defs_folder_sandbox() as sandbox:
        yield Project(sandbox, tmp_path)


def key(path: str) -> dg.AssetKey:
    return dg.AssetKey(path.split("/"))


def engine_index(defs: dg.Definitions, resource_key: str = "atdata_index"):
    return defs.resources[resource_key].build_index()


def error_chain(exc: BaseException) -> list[BaseException]:
    out = []
    while exc is not None and exc not in out:
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def load_error(project: Project) -> list[BaseException]:
    with pytest.raises(Exception) as info:
        with project.defs():
            pass
    return error_chain(info.value)


# --------------------------------------------------------------------------- YAML -> materialized
def test_yaml_declared_upstream_and_downstream_materialize_into_index_with_lineage(project, instance):
    project.add_index()
    project.add_dataset(
        "raw", asset_key="pts/raw", fn=project.fn("make_points"), maxcount=4, group_name="points",
        code_version="2", tags={"team": "vision"}, description="Raw points.",
    )
    project.add_dataset(
        "scaled", asset_key="pts/scaled", fn=project.fn("scale"), code_version="1",
        ins={"points": {"key": "pts/raw", "sample_type": project.fn("Point")}},
    )
    with project.defs() as defs:
        raw_spec = defs.resolve_assets_def(key("pts/raw")).specs_by_key[key("pts/raw")]
        assert raw_spec.kinds == {"webdataset"}
        assert raw_spec.group_name == "points"
        assert raw_spec.code_version == "2"  # YAML "2" reaches Dagster as text, not the int Jinja makes of it
        assert raw_spec.description == "Raw points."
        assert raw_spec.tags["team"] == "vision"
        scaled_def = defs.resolve_assets_def(key("pts/scaled"))
        assert scaled_def.specs_by_key[key("pts/scaled")].description == "Every vector doubled."  # fn's docstring
        assert {d.asset_key for d in scaled_def.specs_by_key[key("pts/scaled")].deps} == {key("pts/raw")}

        result = defs.resolve_implicit_global_asset_job_def().execute_in_process(instance=instance)
        assert result.success
        raw_mat = materialization(result, key("pts/raw"))
        scaled_mat = materialization(result, key("pts/scaled"))
        assert md(raw_mat, "dagster/row_count") == 10
        assert md(raw_mat, "atdata/shard_count") == 3  # maxcount 4 over 10 samples
        assert [c.name for c in md(raw_mat, "dagster/column_schema").columns] == ["idx", "split", "vec"]
        raw_cid = md(raw_mat, "atdata/cid")
        assert raw_mat.tags["dagster/data_version"] == md(raw_mat, "atdata/content_id")

        index = engine_index(defs)
        try:
            raw = index.get_dataset("pts/raw")
            scaled = index.get_dataset("pts/scaled")
            assert raw.cid == raw_cid and scaled.cid == md(scaled_mat, "atdata/cid")
            assert len(raw.data_urls) == 3
            lineage = scaled.metadata["lineage"]
            assert lineage["asset_key"] == ["pts", "scaled"]
            assert lineage["code_version"] == "1"
            assert lineage["run_id"] == result.run_id
            assert lineage["upstream"] == [{"asset_key": ["pts", "raw"], "partition": None, "cid": raw_cid}]
            vecs = [s.vec.tolist() for s in index.dataset("pts/scaled").ordered()]
            assert vecs == [[2.0 * i] * 3 for i in range(10)]
        finally:
            index.close()


def test_yaml_static_partitions_write_one_entry_per_key_and_pass_partition_key(project):
    project.add_index()
    project.add_dataset("split", asset_key="pts/split", fn=project.fn("make_points"), partitions=["train", "test"])
    project.add_dataset(
        "evens", asset_key="pts/evens", fn=project.fn("evens"), partitions=["train", "test"], ins={"points": "pts/split"},
    )
    with project.defs() as defs:
        assets = [defs.resolve_assets_def(key("pts/split")), defs.resolve_assets_def(key("pts/evens"))]
        result = dg.materialize(assets, resources=defs.resources, partition_key="train")
        assert result.success
        index = engine_index(defs)
        try:
            split = index.get_dataset("pts/split/partition=train")
            evens = index.get_dataset("pts/evens/partition=train")
            samples = list(index.dataset("pts/evens/partition=train").ordered())
            assert [s.idx for s in samples] == [0, 2, 4, 6, 8]
            assert {s.split for s in samples} == {"train"}
            assert evens.metadata["lineage"]["partition"] == "train"
            assert evens.metadata["lineage"]["upstream"] == [
                {"asset_key": ["pts", "split"], "partition": "train", "cid": split.cid}
            ]
            names = {e.name for e in index.list_entries()}
            assert "pts/split/partition=test" not in names
        finally:
            index.close()


def test_yaml_numeric_looking_strings_stay_text(project):
    # Dagster renders YAML strings as native Jinja templates, which turns "2024" into an int
    project.add_index()
    project.add_dataset(
        "years", asset_key="2024", fn=project.fn("make_points"), partitions=["2023", "2024"], code_version="7",
        tags={"year": "2024"}, deps=["2023"], dataset_name="2024",
    )
    with project.defs() as defs:
        asset = defs.resolve_assets_def(key("2024"))
        spec = asset.specs_by_key[key("2024")]
        assert asset.partitions_def.get_partition_keys() == ["2023", "2024"]
        assert spec.code_version == "7" and spec.tags["year"] == "2024"
        assert {d.asset_key for d in spec.deps} == {key("2023")}
        assert spec.metadata["atdata/name"] == "2024"


def test_yaml_checks_true_adds_the_three_dataset_checks_and_they_pass(project, instance):
    project.add_index()
    project.add_dataset("raw", asset_key="pts/raw", fn=project.fn("make_points"), checks=True, blocking_checks=True)
    project.add_dataset("plain", asset_key="pts/plain", fn=project.fn("make_points"), checks=["checksums"])
    with project.defs() as defs:
        graph = defs.resolve_asset_graph()
        assert {(k.asset_key, k.name) for k in graph.asset_check_keys} == {
            (key("pts/raw"), "atdata_checksums"), (key("pts/raw"), "atdata_sample_count"),
            (key("pts/raw"), "atdata_schema"), (key("pts/plain"), "atdata_checksums"),
        }
        assert all(graph.get_check_spec(k).blocking for k in graph.asset_check_keys if k.asset_key == key("pts/raw"))
        result = defs.resolve_implicit_global_asset_job_def().execute_in_process(instance=instance)
        evaluations = result.get_asset_check_evaluations()
        assert len(evaluations) == 4
        assert all(e.passed for e in evaluations), [(e.check_name, e.description) for e in evaluations]


def test_yaml_promote_dataset_name_repo_and_manifest_reach_the_entry(project, tmp_path):
    project.add_index(repos={"lab": {"path": str(tmp_path / "lab.db"), "data_store": {"kind": "local", "root": str(tmp_path / "lab")}}})
    project.add_dataset(
        "raw", asset_key="pts/raw", fn=project.fn("make_points"), promote=True, dataset_name="custom/points",
        repo="lab", manifest=True, maxsize=10_000_000,
    )
    with project.defs() as defs:
        result = dg.materialize([defs.resolve_assets_def(key("pts/raw"))], resources=defs.resources)
        assert result.success
        assert md(materialization(result, key("pts/raw")), "atdata/repo") == "lab"
        index = engine_index(defs)
        try:
            entry = index.get_dataset("lab/custom/points")
            assert entry.metadata["promote"] is True
            assert all(url.startswith(str(tmp_path / "lab")) for url in entry.data_urls)
            assert all(Path(url.removesuffix(".tar") + ".manifest.json").exists() for url in entry.data_urls)
            assert not index.list_datasets("local")
        finally:
            index.close()


def test_yaml_index_component_binds_resource_and_io_manager_keys(project, instance):
    project.add_index(resource_key="points_index", io_manager_key="points_io", default_maxcount=3, preview_rows=0)
    project.add_dataset("raw", asset_key="pts/raw", fn=project.fn("make_points"), io_manager_key="points_io")
    with project.defs() as defs:
        assert isinstance(defs.resources["points_index"], AtdataIndexResource)
        io = defs.resources["points_io"]
        assert isinstance(io, AtdataIOManager) and io.maxcount == 3 and io.preview_rows == 0
        assert "io_manager" not in defs.resources
        result = defs.resolve_implicit_global_asset_job_def().execute_in_process(instance=instance)
        mat = materialization(result, key("pts/raw"))
        assert md(mat, "atdata/shard_count") == 4  # the component's default_maxcount=3 over 10 samples
        assert "atdata/preview" not in mat.metadata


def test_scaffolded_defs_yaml_loads_and_materializes_with_the_given_params(project, tmp_path, instance):
    sandbox = project.sandbox
    index_dir = sandbox.scaffold_component(
        component_cls=AtdataIndexResourceComponent, defs_path="index",
        scaffold_params={"path": str(tmp_path / "index.db"), "data_root": str(tmp_path / "data")},
    )
    dataset_dir = sandbox.scaffold_component(
        component_cls=WebDatasetComponent, defs_path="digits_raw", scaffold_params={"fn": project.fn("make_points")},
    )
    assert "type: atdata_dagster.components.AtdataIndexResourceComponent" in (index_dir / "defs.yaml").read_text()
    assert "asset_key: digits_raw" in (dataset_dir / "defs.yaml").read_text()  # default: the folder name
    with project.defs() as defs:
        result = defs.resolve_implicit_global_asset_job_def().execute_in_process(instance=instance)
        assert result.success
        assert len(result.get_asset_check_evaluations()) == 3  # the scaffold turns the checks on
        index = engine_index(defs)
        try:
            assert index.get_dataset("digits_raw").data_urls[0].startswith(str(tmp_path / "data"))
        finally:
            index.close()


# --------------------------------------------------------------------------- Python construction
def test_python_constructed_components_build_the_same_dataset_asset(tmp_path, instance):
    index_component = AtdataIndexResourceComponent(
        path=str(tmp_path / "index.db"), data_store={"kind": "local", "root": str(tmp_path / "data")},
        atmosphere=False,
    )
    resources = component_defs(component=index_component).resources
    raw = component_defs(
        component=WebDatasetComponent(asset_key="pts/raw", fn=f"{HERE}:make_points", maxcount=5, checks=["sample_count"]),
        resources=resources,
    )
    scaled = component_defs(
        component=WebDatasetComponent(
            asset_key="pts/scaled", fn=f"{HERE}:scale", ins={"points": {"key": "pts/raw", "sample_type": f"{HERE}:Point"}},
        ),
        resources=resources,
    )
    defs = dg.Definitions.merge(raw, scaled)
    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(instance=instance)
    assert result.success
    assert [e.passed for e in result.get_asset_check_evaluations()] == [True]
    assert md(materialization(result, key("pts/raw")), "atdata/shard_count") == 2
    scaled_mat = materialization(result, key("pts/scaled"))
    assert md(scaled_mat, "atdata/upstream_cids")[0]["cid"] == md(materialization(result, key("pts/raw")), "atdata/cid")


def test_python_component_keeps_envvar_secrets_as_envvar():
    component = AtdataIndexResourceComponent(
        dsn=dg.EnvVar("ATDATA_TEST_DSN"), atmosphere_handle="lab.test", atmosphere_password=dg.EnvVar("ATDATA_TEST_PW"),
        data_store={"kind": "s3", "bucket": "b", "aws_secret_access_key": dg.EnvVar("ATDATA_TEST_S3")},
    )
    assert isinstance(component.dsn, dg.EnvVar)
    resource = component.build_resource()
    assert _env_var_name(resource.dsn) == "ATDATA_TEST_DSN"
    assert _env_var_name(resource.atmosphere_password) == "ATDATA_TEST_PW"
    assert _env_var_name(resource.data_store.aws_secret_access_key) == "ATDATA_TEST_S3"


def _env_var_name(value: Any) -> str | None:
    """The variable an EnvVar field reads at run time (None for a plain value, which would be stored)."""
    return value.env_var_name if isinstance(value, dg.EnvVar) else None


def test_dataset_asset_without_an_atdata_io_manager_fails_instead_of_pickling(tmp_path):
    defs = component_defs(component=WebDatasetComponent(asset_key="pts/raw", fn=f"{HERE}:make_points"))
    with dg.instance_for_test(temp_dir=str(tmp_path)) as inst:
        result = dg.materialize(list(defs.assets), instance=inst, raise_on_error=False)
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error.cause
    assert failure.cls_name == "ConfigurationError"
    assert "AtdataIndexResourceComponent" in failure.message and "'io_manager'" in failure.message
    assert not list(tmp_path.rglob("pts*"))  # nothing was pickled by Dagster's default IO manager


# --------------------------------------------------------------------------- secrets
@pytest.mark.postgres
def test_env_templated_secrets_become_envvar_and_never_appear_in_definitions_or_metadata(
    project, postgres_dsn, instance, monkeypatch,
):
    password = f"pw-{uuid.uuid4().hex}"
    # trust auth ignores the password, so the run really connects with the secret-bearing DSN
    secret_dsn = postgres_dsn.replace("postgres@", f"postgres:{password}@", 1)
    assert password in secret_dsn
    app_password = f"app-{uuid.uuid4().hex}"
    monkeypatch.setenv("ATDATA_TEST_INDEX_DSN", secret_dsn)
    monkeypatch.setenv("ATDATA_TEST_APP_PASSWORD", app_password)
    project.add_index(
        path=None, dsn="{{ env.ATDATA_TEST_INDEX_DSN }}", atmosphere=True,
        atmosphere_handle="lab.test", atmosphere_password="{{ env('ATDATA_TEST_APP_PASSWORD') }}",
    )
    project.add_dataset("raw", asset_key="pts/raw", fn=project.fn("make_points"), checks=True)
    with project.defs() as defs:
        resource = defs.resources["atdata_index"]
        assert _env_var_name(resource.dsn) == "ATDATA_TEST_INDEX_DSN"
        assert _env_var_name(resource.atmosphere_password) == "ATDATA_TEST_APP_PASSWORD"
        result = defs.resolve_implicit_global_asset_job_def().execute_in_process(instance=instance)
        assert result.success
        assert all(e.passed for e in result.get_asset_check_evaluations())

        seen = [repr(defs.resources), resource.model_dump_json()]
        for asset in defs.assets:
            seen.append(repr(asset.metadata_by_key))
        for record in instance.all_logs(result.run_id):
            seen.append(repr(record))
        # EnvVar fields resolve only inside a run; read the index back with the plain DSN
        index = AtdataIndexResource(dsn=secret_dsn, atmosphere=False).build_index()
        try:
            entry = index.get_dataset("pts/raw")  # written to PostgreSQL through the EnvVar DSN
            seen.append(json.dumps(entry.metadata, default=str))
        finally:
            index.close()
        text = "\n".join(seen)
        assert md(materialization(result, key("pts/raw")), "atdata/cid") in text  # the scan saw the run
        assert password not in text
        assert app_password not in text


@pytest.mark.s3
@pytest.mark.xdist_group("s3")
def test_yaml_s3_store_reads_its_secret_key_from_the_environment_at_run_time(project, s3_server, s3_bucket, instance, monkeypatch):
    monkeypatch.setenv("ATDATA_TEST_S3_SECRET", s3_server["aws_secret_access_key"])
    project.add_index(data_store={
        "kind": "s3", "bucket": s3_bucket, "endpoint_url": s3_server["endpoint_url"],
        "region_name": s3_server["region_name"], "aws_access_key_id": s3_server["aws_access_key_id"],
        "aws_secret_access_key": "{{ env.ATDATA_TEST_S3_SECRET }}",
    })
    project.add_dataset("raw", asset_key="pts/raw", fn=project.fn("make_points"), maxcount=5, checks=["checksums"])
    with project.defs() as defs:
        store = defs.resources["atdata_index"].data_store
        assert _env_var_name(store.aws_secret_access_key) == "ATDATA_TEST_S3_SECRET"
        result = defs.resolve_implicit_global_asset_job_def().execute_in_process(instance=instance)
        assert result.success
        assert [e.passed for e in result.get_asset_check_evaluations()] == [True]
        mat = materialization(result, key("pts/raw"))
        assert md(mat, "dagster/uri").startswith(f"s3://{s3_bucket}/pts/raw/")
        assert s3_server["aws_secret_access_key"] not in repr(dict(mat.metadata))


# --------------------------------------------------------------------------- bad YAML
def test_yaml_unknown_key_is_rejected_naming_the_key_and_file(project):
    path = project.add_dataset("raw", asset_key="pts/raw", fn=project.fn("make_points"), maxcont=5)
    message = "\n".join(str(e) for e in load_error(project))
    assert "maxcont" in message and "Extra inputs are not permitted" in message
    assert str(path / "defs.yaml") in message


def test_yaml_value_of_the_wrong_type_is_rejected_naming_the_field(project):
    project.add_dataset("raw", asset_key="pts/raw", fn=project.fn("make_points"), maxcount="five")
    message = "\n".join(str(e) for e in load_error(project))
    assert "maxcount" in message and "valid integer" in message and "five" in message


def test_yaml_unknown_store_kind_is_rejected_naming_the_choices(project):
    project.add_index(data_store={"kind": "gcs", "bucket": "b"})
    message = "\n".join(str(e) for e in load_error(project))
    assert "gcs" in message and "'local'" in message and "'s3'" in message


BAD_DATASETS = [
    pytest.param({"asset_key": "pts//raw"}, InvalidNameError, "asset_key 'pts//raw' is not a valid asset key", id="empty-key-segment"),
    pytest.param({"asset_key": "pts/raw data"}, InvalidNameError, "is not a valid asset key", id="space-in-key"),
    pytest.param({"dataset_name": "../escape"}, InvalidNameError, "dataset_name", id="dataset-name-escapes"),
    pytest.param({"ins": {"class": "pts/up"}}, InvalidNameError, "input name 'class'", id="input-name-keyword"),
    pytest.param({"ins": {"up": "pts/../up"}}, InvalidNameError, "ins.up", id="input-key-invalid"),
    pytest.param({"fn": "no_such_pkg.mod:f"}, ConfigurationError, "cannot import module 'no_such_pkg.mod'", id="fn-module-missing"),
    pytest.param({"fn": "PIPE:nope"}, ConfigurationError, "has no attribute 'nope'", id="fn-attr-missing"),
    pytest.param({"fn": "just_a_name"}, ConfigurationError, "'package.module:name'", id="fn-not-a-reference"),
    pytest.param({"fn": "PIPE:needs_other", "ins": {"points": "pts/up"}}, ConfigurationError,
                 "requires parameters ['other']", id="fn-param-unsupplied"),
    pytest.param({"fn": "PIPE:ignores_inputs", "ins": {"points": "pts/up"}}, ConfigurationError,
                 "no parameter for the inputs ['points']", id="fn-ignores-input"),
    pytest.param({"maxcount": 0}, ConfigurationError, "maxcount must be a positive integer", id="maxcount-zero"),
    pytest.param({"metadata": {"atdata/maxcount": 3}}, ConfigurationError, "reserved", id="reserved-metadata"),
    pytest.param({"partitions": ["a", "a"]}, ConfigurationError, "distinct keys", id="duplicate-partitions"),
    pytest.param({"io_manager_key": "io-manager"}, InvalidNameError, "not a valid Dagster resource key", id="io-manager-key"),
]


@pytest.mark.parametrize("attrs, error, text", BAD_DATASETS)
def test_yaml_bad_dataset_declaration_raises_typed_error_with_the_fix(project, attrs, error, text):
    attrs = {"asset_key": "pts/raw", "fn": project.fn("make_points"), **attrs}
    if attrs["fn"].startswith("PIPE:"):
        attrs["fn"] = project.fn(attrs["fn"][5:])
    project.add_dataset("bad", **attrs)
    chain = load_error(project)
    typed = [e for e in chain if isinstance(e, error)]
    assert typed, f"no {error.__name__} in {[type(e).__name__ for e in chain]}"
    assert text in str(typed[0])


BAD_INDEXES = [
    pytest.param({"atmosphere_handle": "lab.test", "atmosphere_password": "hunter2"}, ConfigurationError,
                 "literal secret", id="literal-app-password"),
    pytest.param({"path": None, "dsn": "postgresql://u:hunter2@db.example/idx"}, ConfigurationError,
                 "holds a password in plain text", id="dsn-with-password"),
    pytest.param({"path": None, "dsn": "postgresql://u:{{ env.PW }}@db.example/idx"}, ConfigurationError,
                 "must be exactly '{{ env.NAME }}'", id="dsn-partial-template"),
    pytest.param({"data_store": {"kind": "s3", "bucket": "b", "aws_secret_access_key": "AKIA-literal"}},
                 ConfigurationError, "aws_secret_access_key is a literal secret", id="literal-s3-secret"),
    pytest.param({"dsn": "postgresql://u@db.example/idx"}, ConfigurationError, "set only one of path", id="path-and-dsn"),
    pytest.param({"atmosphere_handle": "lab.test"}, ConfigurationError, "set both atmosphere_handle", id="handle-without-password"),
    pytest.param({"resource_key": "atdata-index"}, InvalidNameError, "not a valid Dagster resource key", id="bad-resource-key"),
    pytest.param({"repos": {"lab": {}}}, ConfigurationError, "needs an index", id="repo-without-index"),
    pytest.param({"repos": {"local": {"path": "x.db"}}}, InvalidNameError, "not a usable repository name", id="repo-named-local"),
]


@pytest.mark.parametrize("attrs, error, text", BAD_INDEXES)
def test_yaml_bad_index_declaration_raises_typed_error_without_echoing_secrets(project, attrs, error, text):
    project.add_index(**attrs)
    chain = load_error(project)
    typed = [e for e in chain if isinstance(e, error)]
    assert typed, f"no {error.__name__} in {[type(e).__name__ for e in chain]}"
    assert text in str(typed[0])
    assert "hunter2" not in str(typed[0]) and "AKIA-literal" not in str(typed[0])


# --------------------------------------------------------------------------- schema and registration
def _properties_without_description(schema: Any, path: str = "") -> list[str]:
    missing: list[str] = []
    if isinstance(schema, dict):
        for name, prop in (schema.get("properties") or {}).items():
            if not (isinstance(prop, dict) and prop.get("description")):
                missing.append(f"{path}.{name}")
        for k, v in schema.items():
            missing += _properties_without_description(v, f"{path}.{k}")
    elif isinstance(schema, list):
        for i, v in enumerate(schema):
            missing += _properties_without_description(v, f"{path}[{i}]")
    return missing


@pytest.mark.parametrize("component", [AtdataIndexResourceComponent, WebDatasetComponent], ids=lambda c: c.__name__)
def test_every_yaml_field_has_a_description_in_the_schema_dg_shows(component):
    schema = component.get_model_cls().model_json_schema()
    assert len(schema["properties"]) >= 10
    assert _properties_without_description(schema) == []


def test_components_are_registered_for_dg_through_the_entry_point():
    from dagster.components.core.package_entry import discover_entry_point_package_objects

    eps = {ep.name: ep.value for ep in entry_points(group="dagster_dg_cli.registry_modules")}
    assert eps.get("atdata_dagster") == "atdata_dagster.components"
    found = {(k.namespace, k.name): obj for k, obj in discover_entry_point_package_objects().items()}
    assert found[("atdata_dagster.components", "WebDatasetComponent")] is WebDatasetComponent
    assert found[("atdata_dagster.components", "AtdataIndexResourceComponent")] is AtdataIndexResourceComponent


# --------------------------------------------------------------------------- the dg command line
@pytest.fixture(scope="session")
def dg_cli() -> Path:
    if not DG.exists():
        service_missing("dg", f"{DG} not found; install it with: bash scripts/install-dg.sh")
    probe = subprocess.run([str(DG), "--version"], capture_output=True, text=True, timeout=120)
    if probe.returncode != 0:
        service_missing("dg", f"`dg --version` failed: {probe.stderr.strip()[-300:]}; rerun bash scripts/install-dg.sh")
    return DG


DG_DEFINITIONS = '''
from pathlib import Path

import dagster as dg


@dg.definitions
def defs():
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
'''


def make_dg_project(root: Path, defs_yaml: str) -> Path:
    """A minimal dg project (as create-dagster lays it out) whose code runs in this venv."""
    pkg = root / "dgproj"
    (pkg / "defs" / "points").mkdir(parents=True)
    (root / "pyproject.toml").write_text(textwrap.dedent("""
        [project]
        name = "dgproj"
        version = "0.0.0"
        requires-python = ">=3.11"

        [tool.dg]
        directory_type = "project"

        [tool.dg.project]
        root_module = "dgproj"
        registry_modules = ["atdata_dagster.components"]

        [tool.dg.cli.telemetry]
        enabled = false
    """))
    # dg runs the project's definitions with this interpreter (.venv), not dg's own
    (root / ".env").write_text(f"DG_PROJECT_PYTHON_EXECUTABLE={sys.executable}\n")
    (pkg / "__init__.py").write_text("")
    (pkg / "defs" / "__init__.py").write_text("")
    (pkg / "pipeline.py").write_text(PIPELINE)
    (pkg / "definitions.py").write_text(DG_DEFINITIONS)
    (pkg / "defs" / "points" / "defs.yaml").write_text(defs_yaml)
    return root


def run_dg(dg_path: Path, project_root: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    home = project_root / "dagster_home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    run_env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    run_env.update({"DAGSTER_HOME": str(home), "NO_COLOR": "1", **(env or {})})
    return subprocess.run(
        [str(dg_path), *args], cwd=project_root, env=run_env, capture_output=True, text=True, timeout=300,
    )


def dg_defs_yaml(tmp: Path, scaled_extra: str = "") -> str:
    return textwrap.dedent(f"""\
        type: {INDEX_TYPE}
        attributes:
          path: {tmp / 'index.db'}
          data_store: {{kind: local, root: {tmp / 'data'}}}
          atmosphere_handle: lab.test
          atmosphere_password: "{{{{ env.ATDATA_TEST_APP_PASSWORD }}}}"
        ---
        type: {DATASET_TYPE}
        attributes:
          asset_key: pts/raw
          fn: dgproj.pipeline:make_points
          maxcount: 4
          checks: true
        ---
        type: {DATASET_TYPE}
        attributes:
          asset_key: pts/scaled
          fn: dgproj.pipeline:scale
          ins:
            points: pts/raw
        {scaled_extra}""")


@pytest.mark.slow
def test_dg_check_defs_accepts_the_yaml_project_and_dg_lists_the_datasets_and_components(dg_cli, tmp_path):
    secret = f"app-{uuid.uuid4().hex}"
    root = make_dg_project(tmp_path / "proj", dg_defs_yaml(tmp_path))
    env = {"ATDATA_TEST_APP_PASSWORD": secret}
    check = run_dg(dg_cli, root, "check", "defs", env=env)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "All component YAML validated successfully" in check.stdout + check.stderr
    assert "All definitions loaded successfully" in check.stdout + check.stderr

    listing = run_dg(dg_cli, root, "list", "defs", "--json", env=env)
    assert listing.returncode == 0, listing.stderr
    data = json.loads(listing.stdout)
    assets = {a["asset_key"]: a for a in data["assets"]}
    assert set(assets) == {"pts/raw", "pts/scaled"}
    assert assets["pts/raw"]["kinds"] == ["webdataset"]
    assert assets["pts/scaled"]["dependency_keys"] == ["pts/raw"]
    assert {c["name"] for c in data["asset_checks"]} == {"atdata_checksums", "atdata_sample_count", "atdata_schema"}
    assert secret not in check.stdout + check.stderr + listing.stdout + listing.stderr
    assert not (tmp_path / "index.db").exists()  # loading definitions touches no index

    components = run_dg(dg_cli, root, "list", "components", "--json", env=env)
    assert components.returncode == 0, components.stderr
    summaries = {c["key"]: c["summary"] for c in json.loads(components.stdout)["items"]}
    assert summaries[DATASET_TYPE].startswith("A typed WebDataset asset")
    assert summaries[INDEX_TYPE].startswith("An atdata dataset index")


@pytest.mark.slow
@pytest.mark.parametrize(
    "scaled_extra, expected",
    [
        pytest.param("  maxcont: 5\n", ["maxcont", "defs.yaml:", "not allowed"], id="unknown-key"),
        pytest.param("  dataset_name: ../escape\n", ["InvalidNameError", "dataset_name", "'..'"], id="bad-dataset-name"),
    ],
)
def test_dg_check_defs_fails_on_a_broken_defs_yaml_with_the_reason(dg_cli, tmp_path, scaled_extra, expected):
    root = make_dg_project(tmp_path / "proj", dg_defs_yaml(tmp_path, scaled_extra))
    check = run_dg(dg_cli, root, "check", "defs", env={"ATDATA_TEST_APP_PASSWORD": "x"})
    output = check.stdout + check.stderr
    assert check.returncode != 0, output
    for text in expected:
        assert text in output, output[-3000:]
