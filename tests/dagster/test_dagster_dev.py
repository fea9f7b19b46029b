"""End to end: ``dagster dev`` on loopback, a materialization launched and read back over GraphQL."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOCATION = "atdata_e2e"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GraphQL:
    def __init__(self, port: int):
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(self.base + path, timeout=5) as r:
            return json.loads(r.read())

    def __call__(self, query: str, variables: dict | None = None) -> dict:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        req = urllib.request.Request(self.base + "/graphql", data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                out = json.loads(r.read())
        except urllib.error.HTTPError as exc:  # validation errors come back as 400 with a JSON body
            raise AssertionError(f"GraphQL HTTP {exc.code}: {exc.read()[:2000]!r}") from None
        assert not out.get("errors"), out["errors"]
        return out["data"]


def _wait(what: str, fn, timeout: float, proc: subprocess.Popen, log: Path):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"dagster dev exited ({proc.returncode}) while waiting for {what}:\n{log.read_text()[-3000:]}")
        try:
            value = fn()
            if value:
                return value
        except (OSError, AssertionError) as exc:
            last = exc
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what} ({last!r}):\n{log.read_text()[-3000:]}")


@pytest.fixture
def dagster_dev(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(
        "load_from:\n"
        f"  - python_module:\n"
        f"      module_name: tests.dagster.e2e_defs\n"
        f"      working_directory: {ROOT}\n"
        f"      location_name: {LOCATION}\n"
    )
    port = _free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "DAGSTER_DISABLE_TELEMETRY": "yes",
        "ATDATA_E2E_INDEX": str(tmp_path / "index.db"),
        "ATDATA_E2E_DATA": str(tmp_path / "data"),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    }
    log = tmp_path / "dagster-dev.log"
    dagster = Path(sys.executable).with_name("dagster")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(dagster), "dev", "-w", str(workspace), "-h", "127.0.0.1", "-p", str(port)],
            cwd=str(ROOT), env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    gql = GraphQL(port)
    try:
        _wait("the webserver", lambda: gql.get("/server_info").get("dagster_version"), 120, proc, log)
        yield gql, proc, log, tmp_path
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:  # pragma: no cover - last resort, our own session only
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


LAUNCH = """
mutation($p: ExecutionParams!) { launchRun(executionParams: $p) {
  __typename
  ... on LaunchRunSuccess { run { runId } }
  ... on PythonError { message }
  ... on InvalidSubsetError { message }
  ... on RunConfigValidationInvalid { errors { message } }
} }
"""

RUN_STATUS = """query($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status } } }"""

MATERIALIZATION = """
query($path: [String!]!) { assetOrError(assetKey: {path: $path}) { ... on Asset {
  assetMaterializations(limit: 1) { runId metadataEntries {
    label
    ... on IntMetadataEntry { intValue }
    ... on TextMetadataEntry { text }
    ... on MarkdownMetadataEntry { mdStr }
    ... on TableSchemaMetadataEntry { schema { columns { name type } } }
  } }
} } }
"""

LOCATIONS = """{ workspaceOrError { ... on Workspace { locationEntries { name
  locationOrLoadError { __typename ... on RepositoryLocation { name } ... on PythonError { message } } } } } }"""


@pytest.mark.slow
def test_dagster_dev_materializes_and_reports_dataset_metadata_over_graphql(dagster_dev):
    gql, proc, log, tmp_path = dagster_dev

    def location_loaded():
        entries = gql(LOCATIONS)["workspaceOrError"]["locationEntries"]
        for e in entries:
            loaded = e["locationOrLoadError"]
            if e["name"] == LOCATION and loaded:
                assert loaded["__typename"] == "RepositoryLocation", loaded
                return True
        return False

    _wait("the code location", location_loaded, 120, proc, log)
    launched = gql(
        LAUNCH,
        {"p": {
            "selector": {
                "repositoryLocationName": LOCATION,
                "repositoryName": "__repository__",
                "jobName": "__ASSET_JOB",
                "assetSelection": [{"path": ["e2e_rows"]}, {"path": ["e2e_even"]}],
            },
        }},
    )["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]

    def finished():
        status = gql(RUN_STATUS, {"id": run_id})["runOrError"]["status"]
        assert status not in ("FAILURE", "CANCELED"), f"run {status}:\n{log.read_text()[-3000:]}"
        return status == "SUCCESS"

    _wait("the run", finished, 120, proc, log)

    mats = gql(MATERIALIZATION, {"path": ["e2e_rows"]})["assetOrError"]["assetMaterializations"]
    assert mats and mats[0]["runId"] == run_id
    entries = {e["label"]: e for e in mats[0]["metadataEntries"]}
    assert entries["dagster/row_count"]["intValue"] == 40
    assert [(c["name"], c["type"]) for c in entries["dagster/column_schema"]["schema"]["columns"]] == [
        ("key", "str"), ("label", "int"), ("vec", "ndarray[float32]")
    ]
    assert entries["atdata/shard_count"]["intValue"] == 3
    cid = entries["atdata/cid"]["text"]

    even = gql(MATERIALIZATION, {"path": ["e2e_even"]})["assetOrError"]["assetMaterializations"][0]
    even_entries = {e["label"]: e for e in even["metadataEntries"]}
    assert even_entries["dagster/row_count"]["intValue"] == 20

    # the index agrees, and records the lineage
    from atdata_dagster.resources import AtdataIndexResource, LocalDiskStoreConfig

    index = AtdataIndexResource(
        path=str(tmp_path / "index.db"), data_store=LocalDiskStoreConfig(root=str(tmp_path / "data")), atmosphere=False
    ).build_index()
    try:
        assert index.get_dataset("e2e_rows").cid == cid
        assert index.get_dataset("e2e_even").metadata["lineage"]["upstream"][0]["cid"] == cid
    finally:
        index.close()
