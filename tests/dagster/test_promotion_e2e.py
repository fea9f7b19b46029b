"""End to end: ``dagster dev`` promotes a marked asset to a real local PDS, by sensor and by schedule.

The daemon runs the sensor; there is no GraphQL "tick now" for schedules, so the test
evaluates the schedule function itself (``build_schedule_context`` against the same
index, PDS and Dagster instance) and launches the run it requests over GraphQL
``launchRun`` with that run config and tags: it exercises the real schedule code and
the real job in the daemon's run launcher without waiting up to a minute for a cron
tick.
"""

import time
from datetime import datetime, timezone

import dagster as dg
import pytest

from atdata_dagster.atmosphere import NSID_ENTRY, NSID_LABEL, NSID_SCHEMA, AtmosphereClient
from atdata_dagster.promotion import PROMOTE_OP

from . import promotion_defs
from .dev_server import FAST_QUEUE, dagster_dev_server

pytestmark = [pytest.mark.slow, pytest.mark.pds, pytest.mark.xdist_group("pds")]

LOCATION = "atdata_promotion_e2e"
SENSOR = "atdata_promotion_sensor"
JOB = "atdata_promotion"
COLLECTIONS = (NSID_SCHEMA, NSID_ENTRY, NSID_LABEL)

START_SENSOR = """
mutation($s: SensorSelector!) { startSensor(sensorSelector: $s) {
  __typename ... on Sensor { sensorState { status } } ... on PythonError { message } } }
"""
SENSOR_STATE = """
query($s: SensorSelector!) { sensorOrError(sensorSelector: $s) { __typename ... on Sensor {
  jobOriginId sensorState { selectorId status
    ticks(limit: 50) { status timestamp runIds skipReason error { message } } } } } }
"""
STOP_SENSOR = """
mutation($o: String!, $s: String!) { stopSensor(jobOriginId: $o, jobSelectorId: $s) {
  __typename ... on StopSensorMutationResult { instigationState { status } } ... on PythonError { message } } }
"""
RUNS = """
query($job: String!) { runsOrError(filter: {pipelineName: $job}) { __typename ... on Runs {
  results { runId status tags { key value } } } } }
"""
OBSERVATIONS = """
query($path: [String!]!) { assetOrError(assetKey: {path: $path}) { ... on Asset {
  assetObservations(limit: 5) { runId metadataEntries { label ... on TextMetadataEntry { text } } } } } }
"""


def _counts(client: AtmosphereClient, did: str) -> list[int]:
    return [sum(1 for _ in client.list_records(did, c)) for c in COLLECTIONS]


def test_sensor_and_schedule_promote_marked_assets_exactly_once_in_dagster_dev(tmp_path, pds, pds_account, monkeypatch):
    started = time.monotonic()
    env = {
        "ATDATA_PROMO_INDEX": str(tmp_path / "index.db"),
        "ATDATA_PROMO_DATA": str(tmp_path / "data"),
        "ATDATA_PROMO_PDS_URL": pds["url"],
        "ATDATA_PROMO_HANDLE": pds_account["handle"],
        "ATDATA_PROMO_PASSWORD": pds_account["password"],
        "ATDATA_PROMO_SENSOR_INTERVAL": "1",
    }
    for k, v in env.items():  # the schedule is evaluated in this process, with the same EnvVars
        monkeypatch.setenv(k, v)
    client = AtmosphereClient(pds["url"], handle=pds_account["handle"], password=pds_account["password"])
    did = pds_account["did"]

    def index():
        return _index(env)

    with dagster_dev_server(tmp_path, "tests.dagster.promotion_defs", LOCATION, env, instance_yaml=FAST_QUEUE) as dev:
        dev.wait_loaded()
        gql = dev.gql
        sensor = dev.selector(sensorName=SENSOR)

        # 1. materialize two marked assets (the sensor watches promo_rows only) and an unmarked one
        dev.wait_run(dev.launch("__ASSET_JOB", assets=[["promo_rows"], ["promo_more"], ["promo_plain"]]))
        with index() as idx:
            entry = idx.get_dataset("promo_rows")
            more = idx.get_dataset("promo_more")
            assert "atmosphere" not in entry.metadata and len(idx.list_entries()) == 3
        assert _counts(client, did) == [0, 0, 0]

        # 2. start the sensor: the daemon launches one promotion run, keyed by the CID
        assert gql(START_SENSOR, {"s": sensor})["startSensor"]["sensorState"]["status"] == "RUNNING"

        def promotion_runs():
            return gql(RUNS, {"job": JOB})["runsOrError"]["results"]

        def succeeded():
            runs = promotion_runs()
            for r in runs:
                assert r["status"] not in ("FAILURE", "CANCELED"), f"{r}:\n{dev.log.read_text()[-3000:]}"
            return [r for r in runs if r["status"] == "SUCCESS"]

        (run,) = dev.wait("the sensor's promotion run", succeeded, 60)
        tags = {t["key"]: t["value"] for t in run["tags"]}
        assert tags["dagster/run_key"] == entry.cid and tags["atdata/cid"] == entry.cid
        assert tags["dagster/sensor_name"] == SENSOR and tags["atdata/name"] == "promo_rows"

        assert _counts(client, did) == [1, 1, 1]
        with index() as idx:
            info = idx.get_dataset("promo_rows").metadata["atmosphere"]
            assert info["uri"].startswith(f"at://{did}/{NSID_ENTRY}/")
            assert "atmosphere" not in (idx.get_dataset("promo_plain").metadata or {})
            assert "atmosphere" not in idx.get_dataset("promo_more").metadata, "outside the sensor's asset_keys"
            assert sorted(e.cid for e in idx.list_entries()) == sorted(
                [entry.cid, more.cid, idx.get_dataset("promo_plain").cid])
        observations = gql(OBSERVATIONS, {"path": ["promo_rows"]})["assetOrError"]["assetObservations"]
        assert observations and observations[0]["runId"] == run["runId"]
        meta = {m["label"]: m.get("text") for m in observations[0]["metadataEntries"]}
        assert meta["atdata/at_uri"] == info["uri"] and meta["atdata/cid"] == entry.cid

        # 3. a few more ticks: nothing new, no second run, no new records (no feedback loop)
        run_done = time.time()

        def later_ticks():
            state = gql(SENSOR_STATE, {"s": sensor})["sensorOrError"]["sensorState"]
            after = [t for t in state["ticks"] if t["timestamp"] > run_done and t["status"] != "STARTED"]
            for t in after:
                assert t["status"] != "FAILURE", t
            return after if len(after) >= 2 else None

        for t in dev.wait("two more sensor ticks", later_ticks, 30):
            assert t["status"] == "SKIPPED" and t["runIds"] == [], t
            assert t["skipReason"] == "no entries waiting for promotion", t
        assert len(promotion_runs()) == 1
        assert _counts(client, did) == [1, 1, 1]

        state = gql(SENSOR_STATE, {"s": sensor})["sensorOrError"]
        stopped = gql(STOP_SENSOR, {"o": state["jobOriginId"], "s": state["sensorState"]["selectorId"]})
        assert stopped["stopSensor"]["instigationState"]["status"] == "STOPPED"

        # 4. the schedule sweeps up promo_more, which the sensor's filter left alone
        request = _evaluate_schedule(dev.home, monkeypatch)
        assert isinstance(request, dg.RunRequest), request
        assert request.run_config["ops"][PROMOTE_OP]["config"]["cids"] == [more.cid]
        assert request.run_key.startswith("atdata_promotion_schedule:")
        run_id = dev.launch(JOB, run_config=request.run_config, tags=dict(request.tags))
        dev.wait_run(run_id, 60)

        assert _counts(client, did) == [1, 2, 2], "one more entry and label, the schema reused"
        with index() as idx:
            assert idx.get_dataset("promo_more").metadata["atmosphere"]["uri"].startswith("at://")
            assert idx.get_dataset("promo_rows").metadata["atmosphere"]["uri"] == info["uri"]
            assert len(idx.list_entries()) == 3
        again = _evaluate_schedule(dev.home, monkeypatch)
        assert isinstance(again, dg.SkipReason) and again.skip_message == "no entries waiting for promotion"
    assert time.monotonic() - started < 120


def _index(env: dict):
    from atdata_dagster.resources import AtdataIndexResource, LocalDiskStoreConfig

    return AtdataIndexResource(
        path=env["ATDATA_PROMO_INDEX"], data_store=LocalDiskStoreConfig(root=env["ATDATA_PROMO_DATA"]), atmosphere=False,
    ).build_index()


def _evaluate_schedule(home, monkeypatch) -> "dg.RunRequest | dg.SkipReason":
    """What the schedule asks for right now, evaluated as the daemon would (same instance and resources)."""
    schedule = promotion_defs.defs.resolve_schedule_def("atdata_promotion_schedule")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    instance = dg.DagsterInstance.get()
    try:
        with dg.build_schedule_context(
            instance=instance, resources={"atdata_index": promotion_defs.index_resource},
            scheduled_execution_time=datetime.now(timezone.utc),
        ) as ctx:
            data = schedule.evaluate_tick(ctx)
    finally:
        instance.dispose()
    if data.run_requests:
        (request,) = data.run_requests
        return request
    return dg.SkipReason(data.skip_message)
