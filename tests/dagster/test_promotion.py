"""Promotion to the atmosphere: the sensor, the schedule and the job, against a real local PDS.

Sensor and schedule tests that need no record on the PDS use credentials for a server
that is never contacted (the sensor decides from the index and the resource config
alone). Everything that publishes talks to the ``pds`` fixture; nothing of ATProto is
mocked.
"""

import json
import sqlite3
import threading
import time
from datetime import datetime, timezone

import dagster as dg
import numpy as np
import pytest

from atdata_dagster.atmosphere import NSID_ENTRY, NSID_LABEL, NSID_SCHEMA, AtmosphereClient
from atdata_dagster.io_manager import AtdataIOManager
from atdata_dagster.promotion import (
    PROMOTE_OP,
    build_promotion_job,
    build_promotion_schedule,
    build_promotion_sensor,
    pending_entries,
)
from atdata_dagster.resources import AtdataIndexResource, LocalDiskStoreConfig, RepositoryConfig
from atdata_dagster.samples.packable import packable

from tests.tcp_proxy import StoppableProxy

from .helpers import rows

KEY = "atdata_index"
COLLECTIONS = (NSID_SCHEMA, NSID_ENTRY, NSID_LABEL)
FAST_RETRY = dg.RetryPolicy(max_retries=3, delay=1)


def pds_test(fn):
    """Needs the local PDS; one xdist worker runs every PDS test (one server, not two)."""
    return pytest.mark.pds(pytest.mark.xdist_group("pds")(fn))


# --------------------------------------------------------------------------- helpers
def make_resource(tmp_path, *, url: str | None = None, handle: str | None = None, password: str | None = None,
                  atmosphere: bool = True, **kwargs) -> AtdataIndexResource:
    return AtdataIndexResource(
        path=str(tmp_path / "index.db"),
        data_store=LocalDiskStoreConfig(root=str(tmp_path / "data")),
        atmosphere=atmosphere,
        atmosphere_service_url=url,
        atmosphere_handle=handle,
        atmosphere_password=password,
        **kwargs,
    )


def offline_resource(tmp_path, **kwargs) -> AtdataIndexResource:
    """Credentials for a PDS nobody listens on: fine for sensors, which never go online."""
    return make_resource(tmp_path, url="http://127.0.0.1:9", handle="nobody.test", password="unused", **kwargs)


def pds_resource(tmp_path, pds, account, **kwargs) -> AtdataIndexResource:
    return make_resource(tmp_path, url=pds["url"], handle=account["handle"], password=account["password"], **kwargs)


def marked(name: str, *, start: int = 0, n: int = 3, partitions=None, extra: dict | None = None) -> dg.AssetsDefinition:
    @dg.asset(name=name, metadata={"atdata/promote": True, **(extra or {})}, partitions_def=partitions, code_version="1")
    def _asset(context: dg.AssetExecutionContext):
        offset = start + (int(context.partition_key[1:]) * 100 if context.has_partition_key else 0)
        return rows(n, start=offset)

    return _asset


def unmarked(name: str) -> dg.AssetsDefinition:
    @dg.asset(name=name)
    def _asset():
        return rows(2, start=50)

    return _asset


def materialize(assets, resource, instance, partition: str | None = None) -> dg.ExecuteInProcessResult:
    result = dg.materialize(
        assets, resources={"io_manager": AtdataIOManager(index=resource)}, instance=instance, partition_key=partition,
    )
    assert result.success
    return result


def entries(resource) -> list:
    index = resource.build_index()
    try:
        return index.list_datasets()
    finally:
        index.close()


def entry_named(resource, name: str):
    index = resource.build_index()
    try:
        return index.get_dataset(name)
    finally:
        index.close()


def same_timestamp(tmp_path, stamp: str = "2030-01-01 00:00:00.000") -> None:
    """Give every entry of the test index the same created_at (as SQLite writes it)."""
    with sqlite3.connect(tmp_path / "index.db") as conn:
        conn.execute("UPDATE dataset_entries SET created_at = ?", (stamp,))


def tick(sensor, instance, resource, cursor: str | None = None):
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources={KEY: resource}) as ctx:
        return sensor.evaluate_tick(ctx)


def schedule_tick(schedule, instance, resource, when: datetime | None = None):
    when = when or datetime(2030, 1, 2, 3, 0, tzinfo=timezone.utc)
    with dg.build_schedule_context(instance=instance, resources={KEY: resource}, scheduled_execution_time=when) as ctx:
        return schedule.evaluate_tick(ctx)


def record_counts(pds, account) -> list[int]:
    client = AtmosphereClient(pds["url"], handle=account["handle"], password=account["password"])
    return [sum(1 for _ in client.list_records(account["did"], c)) for c in COLLECTIONS]


def run_job(job, cids, resource, instance, **config) -> dg.ExecuteInProcessResult:
    cfg = {"cids": list(cids), **config}
    return job.execute_in_process(
        run_config={"ops": {PROMOTE_OP: {"config": cfg}}}, resources={KEY: resource}, instance=instance,
        raise_on_error=False,
    )


def step_events(result, kind: str) -> list:
    return [e for e in result.all_events if e.event_type_value == kind]


def error_text(error) -> str:
    """Messages of a SerializableErrorInfo and its causes (a retry wraps the op's error)."""
    parts = []
    while error is not None:
        parts.append(f"{error.cls_name}: {error.message}")
        error = error.cause or error.context
    return "\n".join(parts)


def failure_message(result) -> str:
    failures = step_events(result, "STEP_FAILURE")
    assert failures, "the run did not fail"
    return error_text(failures[-1].event_specific_data.error)


@pytest.fixture(scope="module")
def test_instance(tmp_path_factory):
    """One real (SQLite-backed) instance for the module: creating one costs ~0.6 s.

    Tests stay independent: every test has its own index (so its own CIDs, since shard
    URLs carry the tmp path) and reads only its own runs' events.
    """
    home = tmp_path_factory.mktemp("dagster_home")
    with dg.instance_for_test(temp_dir=str(home)) as inst:
        yield inst


@pytest.fixture
def fresh_instance(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as inst:
        yield inst


@pytest.fixture
def job():
    return build_promotion_job(retry_policy=FAST_RETRY)


# --------------------------------------------------------------------------- the sensor
def test_sensor_requests_one_run_per_new_marked_entry_keyed_by_its_cid(tmp_path, test_instance, job):
    res = offline_resource(tmp_path)
    materialize([marked("to_promote"), unmarked("plain")], res, test_instance)
    entry = entry_named(res, "to_promote")

    data = tick(build_promotion_sensor(job), test_instance, res)

    assert [r.run_key for r in data.run_requests] == [entry.cid]
    request = data.run_requests[0]
    assert request.run_config == {"ops": {PROMOTE_OP: {"config": {"cids": [entry.cid]}}}}
    assert request.tags["atdata/cid"] == entry.cid and request.tags["atdata/name"] == "to_promote"
    assert request.tags["atdata/repo"] == "local"
    assert len(entries(res)) == 2, "the unmarked asset's entry exists but must not be requested"


def test_sensor_fed_its_cursor_requests_nothing_twice_and_picks_up_new_versions(tmp_path, test_instance, job):
    res = offline_resource(tmp_path)
    sensor = build_promotion_sensor(job)
    materialize([marked("ds")], res, test_instance)
    first = tick(sensor, test_instance, res)
    assert len(first.run_requests) == 1 and first.cursor

    second = tick(sensor, test_instance, res, first.cursor)
    assert second.run_requests == []
    assert "no new entries" in second.skip_message and "schedule" in second.skip_message

    time.sleep(0.01)  # created_at has millisecond resolution
    materialize([marked("ds", start=10)], res, test_instance)  # new data: a new CID
    newest = entry_named(res, "ds")
    third = tick(sensor, test_instance, res, second.cursor)
    assert [r.run_key for r in third.run_requests] == [newest.cid]
    assert first.run_requests[0].run_key != newest.cid

    ts = lambda c: datetime.fromisoformat(json.loads(c)["repos"]["local"]["ts"])  # noqa: E731
    assert ts(third.cursor) > ts(first.cursor)
    assert ts(third.cursor) == datetime.fromisoformat(newest.created_at)
    assert tick(sensor, test_instance, res, third.cursor).run_requests == []


def test_sensor_requests_every_entry_written_in_the_same_millisecond(tmp_path, test_instance, job):
    res = offline_resource(tmp_path)
    materialize([marked("a"), marked("b", start=5), marked("c", start=9)], res, test_instance)
    same_timestamp(tmp_path)  # the cursor must not lose entries that tie with its newest one
    sensor = build_promotion_sensor(job)
    data = tick(sensor, test_instance, res)
    assert len(data.run_requests) == 3
    # a fourth entry with the very same timestamp arrives later: still requested, the others not
    materialize([marked("d", start=20)], res, test_instance)
    same_timestamp(tmp_path)
    again = tick(sensor, test_instance, res, data.cursor)
    assert [r.tags["atdata/name"] for r in again.run_requests] == ["d"]


def test_sensor_handles_entries_without_a_timestamp_on_its_first_tick_only(tmp_path, test_instance, job):
    res = offline_resource(tmp_path)
    materialize([marked("undated")], res, test_instance)
    with sqlite3.connect(tmp_path / "index.db") as conn:  # as some atdata-written rows are
        conn.execute("UPDATE dataset_entries SET created_at = NULL")
    sensor = build_promotion_sensor(job)
    first = tick(sensor, test_instance, res)
    assert [r.tags["atdata/name"] for r in first.run_requests] == ["undated"]
    second = tick(sensor, test_instance, res, first.cursor)
    assert second.run_requests == [] and "left to the promotion schedule" in second.skip_message


def test_sensor_filters_by_name_prefix_asset_key_repository_and_predicate(tmp_path, test_instance, job):
    res = offline_resource(tmp_path, repos={"lab": RepositoryConfig(path=str(tmp_path / "lab.db"))})
    materialize(
        [marked("images_a"), marked("images_b", start=3), marked("text", start=6),
         marked("lab_only", start=9, extra={"atdata/repo": "lab"})],
        res, test_instance,
    )

    def names(**filters):
        data = tick(build_promotion_sensor(job, **filters), test_instance, res)
        return sorted(r.tags["atdata/name"] for r in data.run_requests)

    assert names() == ["images_a", "images_b", "lab_only", "text"]
    assert names(name_prefix="images_") == ["images_a", "images_b"]
    assert names(asset_keys=["text", dg.AssetKey("images_b")]) == ["images_b", "text"]
    assert names(repos=["lab"]) == ["lab_only"]
    assert names(entry_filter=lambda e: e.metadata["stats"]["num_samples"] == 3 and e.name != "text") == [
        "images_a", "images_b", "lab_only"]
    lab = tick(build_promotion_sensor(job, repos=["lab"]), test_instance, res).run_requests[0]
    assert lab.tags["atdata/repo"] == "lab"


def test_sensor_with_an_anonymous_atmosphere_skips_and_says_what_to_set(tmp_path, test_instance, job):
    materialize([marked("ds")], offline_resource(tmp_path), test_instance)
    sensor = build_promotion_sensor(job)
    for res, word in ((make_resource(tmp_path), "anonymous"), (make_resource(tmp_path, atmosphere=False), "disabled")):
        data = tick(sensor, test_instance, res, cursor=None)
        assert data.run_requests == []
        assert word in data.skip_message
        assert "atmosphere_handle" in data.skip_message and "atmosphere_password" in data.skip_message
        assert "1 entries are waiting" in data.skip_message
        assert data.cursor is None, "the cursor must not move while nothing can be promoted"


def test_sensor_with_nothing_marked_skips_with_a_reason(tmp_path, test_instance, job):
    res = offline_resource(tmp_path)
    materialize([unmarked("plain")], res, test_instance)
    data = tick(build_promotion_sensor(job), test_instance, res)
    assert data.run_requests == [] and data.skip_message == "no entries waiting for promotion"


def test_sensor_leaves_an_entry_to_the_promotion_run_that_already_holds_it(tmp_path, fresh_instance, job):
    test_instance = fresh_instance  # its fake in-flight run must not outlive the test
    res = offline_resource(tmp_path)
    materialize([marked("ds")], res, test_instance)
    cid = entry_named(res, "ds").cid
    test_instance.create_run_for_job(
        job, run_config={"ops": {PROMOTE_OP: {"config": {"cids": [cid]}}}}, status=dg.DagsterRunStatus.STARTED,
    )
    data = tick(build_promotion_sensor(job), test_instance, res)
    assert data.run_requests == [] and "already being promoted" in data.skip_message
    schedule = schedule_tick(build_promotion_schedule("0 3 * * *", job), test_instance, res)
    assert schedule.run_requests == [] and "already being promoted" in schedule.skip_message


def test_sensor_and_schedule_refuse_a_job_for_another_resource_key(job):
    with pytest.raises(Exception, match="resource_key"):
        build_promotion_sensor(job, resource_key="other_index")
    with pytest.raises(Exception, match="resource_key"):
        build_promotion_schedule("0 * * * *", job, resource_key="other_index")


def test_definitions_with_job_sensor_and_schedule_load(tmp_path):
    job = build_promotion_job("promote", resource_key="idx")
    defs = dg.Definitions(
        jobs=[job],
        sensors=[build_promotion_sensor(job, resource_key="idx", minimum_interval_seconds=5)],
        schedules=[build_promotion_schedule("*/10 * * * *", job, resource_key="idx", execution_timezone="UTC")],
        resources={"idx": offline_resource(tmp_path)},
    )
    dg.Definitions.validate_loadable(defs)
    sensor = defs.resolve_sensor_def("atdata_promotion_sensor")
    assert sensor.minimum_interval_seconds == 5 and sensor.default_status == dg.DefaultSensorStatus.STOPPED
    schedule = defs.resolve_schedule_def("atdata_promotion_schedule")
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED and schedule.execution_timezone == "UTC"


# --------------------------------------------------------------------------- pending_entries and the schedule
def test_pending_entries_are_marked_unpromoted_and_oldest_first(tmp_path, test_instance):
    res = offline_resource(tmp_path)
    materialize([marked("first")], res, test_instance)
    time.sleep(0.01)
    materialize([marked("second", start=4), unmarked("plain")], res, test_instance)
    index = res.build_index()
    try:
        assert [e.name for _, e in pending_entries(index)] == ["first", "second"]
        every = [e.name for _, e in pending_entries(index, require_mark=False)]
        assert sorted(every) == ["first", "plain", "second"]
        assert [e.name for _, e in pending_entries(index, require_mark=False, name_prefix="pl")] == ["plain"]
        with pytest.raises(Exception, match="not mounted"):
            pending_entries(index, repos=["nowhere"])
    finally:
        index.close()


def test_schedule_requests_one_run_for_everything_pending_keyed_by_tick(tmp_path, test_instance, job):
    res = offline_resource(tmp_path)
    materialize([marked("a"), marked("b", start=5), unmarked("plain")], res, test_instance)
    schedule = build_promotion_schedule("0 3 * * *", job, name="nightly")
    when = datetime(2030, 1, 2, 3, 0, tzinfo=timezone.utc)
    data = schedule_tick(schedule, test_instance, res, when)
    expected = [entry_named(res, n).cid for n in ("a", "b")]
    (request,) = data.run_requests
    assert sorted(request.run_config["ops"][PROMOTE_OP]["config"]["cids"]) == sorted(expected)
    assert request.run_key == f"nightly:{when.isoformat()}"
    assert schedule_tick(schedule, test_instance, res, when).run_requests[0].run_key == request.run_key
    assert schedule_tick(build_promotion_schedule("0 3 * * *", job, name_prefix="zzz"), test_instance,
                         res).skip_message == "no entries waiting for promotion"
    anonymous = schedule_tick(schedule, test_instance, make_resource(tmp_path))
    assert anonymous.run_requests == [] and "anonymous" in anonymous.skip_message


# --------------------------------------------------------------------------- the job (real PDS)
@pds_test
def test_job_promotes_records_the_uri_and_observes_the_asset_exactly_once(tmp_path, pds, pds_account, test_instance, job):
    res = pds_resource(tmp_path, pds, pds_account)
    materialize([marked("ds", n=5), unmarked("plain")], res, test_instance)
    before = {e.cid: e.name for e in entries(res)}
    cid = entry_named(res, "ds").cid
    assert record_counts(pds, pds_account) == [0, 0, 0]

    result = run_job(job, [cid], res, test_instance)

    assert result.success
    assert record_counts(pds, pds_account) == [1, 1, 1]
    entry = entry_named(res, "ds")
    info = entry.metadata["atmosphere"]
    assert info["uri"].startswith(f"at://{pds_account['did']}/{NSID_ENTRY}/")
    assert info["schema_uri"].startswith(f"at://{pds_account['did']}/{NSID_SCHEMA}/")
    assert {e.cid: e.name for e in entries(res)} == before, "promotion must not create or change entries"
    assert entry.cid == cid

    (obs,) = [r for r in test_instance.fetch_observations(dg.AssetKey("ds"), limit=100).records
              if r.run_id == result.run_id]
    meta = obs.asset_observation.metadata
    assert meta["atdata/at_uri"].value == info["uri"]
    assert meta["atdata/cid"].value == cid and meta["atdata/schema_uri"].value == info["schema_uri"]
    output = step_events(result, "STEP_OUTPUT")[0].event_specific_data.metadata
    assert output["atdata/promoted"].value == 1 and output["atdata/newly_recorded"].value == 1

    again = run_job(job, [cid], res, test_instance)
    assert again.success
    assert record_counts(pds, pds_account) == [1, 1, 1], "a second promotion must reuse the records"
    assert entry_named(res, "ds").metadata["atmosphere"]["uri"] == info["uri"]
    assert step_events(again, "STEP_OUTPUT")[0].event_specific_data.metadata["atdata/newly_recorded"].value == 0
    assert {e.cid for e in entries(res)} == set(before)


@pds_test
def test_sensor_run_request_drives_the_job_and_the_next_tick_finds_nothing(tmp_path, pds, pds_account, test_instance, job):
    res = pds_resource(tmp_path, pds, pds_account)
    parts = dg.StaticPartitionsDefinition(["p0", "p1"])
    asset = marked("parts", partitions=parts)
    for pk in ("p0", "p1"):
        materialize([asset], res, test_instance, partition=pk)
    sensor = build_promotion_sensor(job)
    data = tick(sensor, test_instance, res)
    assert len(data.run_requests) == 2
    run_ids = set()
    for request in data.run_requests:
        result = job.execute_in_process(run_config=request.run_config, resources={KEY: res}, instance=test_instance,
                                        tags=request.tags)
        assert result.success
        run_ids.add(result.run_id)
    assert record_counts(pds, pds_account) == [1, 2, 2]
    observed = {r.asset_observation.partition for r in test_instance.fetch_observations(dg.AssetKey("parts"), limit=100).records
                if r.run_id in run_ids}
    assert observed == {"p0", "p1"}
    # no feedback loop: neither the cursor nor a fresh sensor sees anything new to promote
    assert tick(sensor, test_instance, res, data.cursor).run_requests == []
    fresh = tick(sensor, test_instance, res)
    assert fresh.run_requests == [] and fresh.skip_message == "no entries waiting for promotion"
    assert len(entries(res)) == 2


@pds_test
def test_rematerialized_unchanged_entry_is_swept_up_by_the_schedule_without_new_records(
        tmp_path, pds, pds_account, test_instance, job):
    # Re-writing the same CID replaces the entry's metadata (the index upserts by CID), so
    # its AT URI is gone; the sensor's run key (the CID) was used already: the schedule
    # must find it and the job must reuse the records on the PDS.
    res = pds_resource(tmp_path, pds, pds_account)
    materialize([marked("ds")], res, test_instance)
    cid = entry_named(res, "ds").cid
    assert run_job(job, [cid], res, test_instance).success
    uri = entry_named(res, "ds").metadata["atmosphere"]["uri"]
    materialize([marked("ds")], res, test_instance)
    assert entry_named(res, "ds").cid == cid

    data = schedule_tick(build_promotion_schedule("0 3 * * *", job), test_instance, res)
    if entry_named(res, "ds").metadata.get("atmosphere"):  # the index kept the URI: nothing to do
        assert data.run_requests == []
        return
    (request,) = data.run_requests
    assert request.run_config["ops"][PROMOTE_OP]["config"]["cids"] == [cid]
    result = job.execute_in_process(run_config=request.run_config, resources={KEY: res}, instance=test_instance)
    assert result.success
    assert entry_named(res, "ds").metadata["atmosphere"]["uri"] == uri
    assert record_counts(pds, pds_account) == [1, 1, 1]


@pds_test
def test_job_promotes_by_name_and_everything_pending(tmp_path, pds, pds_account, test_instance, job):
    res = pds_resource(tmp_path, pds, pds_account)
    materialize([marked("by_name"), marked("swept_a", start=3), marked("swept_b", start=6), unmarked("plain")],
                res, test_instance)
    assert run_job(job, [], res, test_instance, names=["by_name"]).success
    assert "uri" in entry_named(res, "by_name").metadata["atmosphere"]
    result = run_job(job, [], res, test_instance, pending=True, name_prefix="swept_")
    assert result.success
    assert step_events(result, "STEP_OUTPUT")[0].event_specific_data.metadata["atdata/promoted"].value == 2
    assert record_counts(pds, pds_account)[1:] == [3, 3]
    assert "atmosphere" not in (entry_named(res, "plain").metadata or {})
    index = res.build_index()
    try:
        assert pending_entries(index) == []
    finally:
        index.close()


def test_job_with_an_anonymous_atmosphere_fails_at_once_naming_the_fields(tmp_path, test_instance, job):
    res = make_resource(tmp_path)
    materialize([marked("ds")], res, test_instance)
    result = run_job(job, [entry_named(res, "ds").cid], res, test_instance)
    assert not result.success
    message = failure_message(result)
    assert "anonymous" in message and "atmosphere_handle" in message and "atmosphere_password" in message
    assert step_events(result, "STEP_UP_FOR_RETRY") == [], "a configuration error must not be retried"
    assert "atmosphere" not in entry_named(res, "ds").metadata


def test_job_without_targets_fails_with_what_to_set(tmp_path, test_instance, job):
    result = run_job(job, [], offline_resource(tmp_path), test_instance)
    assert not result.success and "cids" in failure_message(result) and "pending: true" in failure_message(result)


@pds_test
def test_job_with_a_wrong_password_fails_without_retrying(tmp_path, pds, pds_account, test_instance, job):
    res = make_resource(tmp_path, url=pds["url"], handle=pds_account["handle"], password="wrong-password")
    materialize([marked("ds")], res, test_instance)
    result = run_job(job, [entry_named(res, "ds").cid], res, test_instance)
    assert not result.success
    assert "authentication failed" in failure_message(result) and pds_account["handle"] in failure_message(result)
    assert step_events(result, "STEP_UP_FOR_RETRY") == []
    assert record_counts(pds, pds_account) == [0, 0, 0]


@packable
class Blob:
    payload: np.ndarray


@pds_test
def test_job_reports_a_shard_the_pds_refuses_and_still_promotes_the_rest(tmp_path, pds, pds_account, test_instance, job):
    res = pds_resource(tmp_path, pds, pds_account)

    @dg.asset(metadata={"atdata/promote": True})
    def too_big():
        return [Blob(payload=np.random.default_rng(0).integers(0, 255, 6 * 1024 * 1024, dtype=np.uint8))]

    materialize([too_big, marked("fine")], res, test_instance)
    cids = [entry_named(res, "too_big").cid, entry_named(res, "fine").cid]
    result = run_job(job, cids, res, test_instance)
    assert not result.success
    message = failure_message(result)
    assert "1 of 2 targets" in message and "BlobTooLargeError" in message and cids[0] in message
    assert step_events(result, "STEP_UP_FOR_RETRY") == [], "a refused upload does not go away by retrying"
    assert "uri" in entry_named(res, "fine").metadata["atmosphere"]
    assert "atmosphere" not in entry_named(res, "too_big").metadata
    assert record_counts(pds, pds_account)[1] == 1


# --------------------------------------------------------------------------- PDS down, then back
@pytest.fixture
def proxy(pds):
    p = StoppableProxy(int(pds["host_url"].rsplit(":", 1)[1]), start_up=False)
    yield p
    p.close()


@pds_test
def test_pds_down_on_the_first_attempt_is_retried_and_publishes_once(tmp_path, pds, pds_account, proxy, test_instance):
    res = make_resource(tmp_path, url=f"http://127.0.0.1:{proxy.port}", handle=pds_account["handle"],
                        password=pds_account["password"])
    materialize([marked("ds")], res, test_instance)
    cid = entry_named(res, "ds").cid
    # the PDS comes back 0.3 s after the first refused connection; the retry waits 1 s
    proxy.on_refused = lambda: threading.Timer(0.3, proxy.up).start()
    job = build_promotion_job(retry_policy=dg.RetryPolicy(max_retries=2, delay=1))

    result = run_job(job, [cid], res, test_instance)

    assert result.success
    retries = step_events(result, "STEP_UP_FOR_RETRY")
    assert len(retries) == 1 and proxy.refused >= 1 and proxy.forwarded >= 1
    text = error_text(retries[0].event_specific_data.error)
    assert "AtmosphereConnectionError" in text and f"http://127.0.0.1:{proxy.port}" in text
    assert record_counts(pds, pds_account) == [1, 1, 1]
    assert entry_named(res, "ds").metadata["atmosphere"]["uri"].startswith("at://")


@pds_test
def test_pds_that_stays_down_fails_the_job_with_a_typed_error_after_the_retries(
        tmp_path, pds, pds_account, proxy, test_instance):
    res = make_resource(tmp_path, url=f"http://127.0.0.1:{proxy.port}", handle=pds_account["handle"],
                        password=pds_account["password"])
    materialize([marked("ds")], res, test_instance)
    job = build_promotion_job(retry_policy=dg.RetryPolicy(max_retries=1, delay=0.1))

    result = run_job(job, [entry_named(res, "ds").cid], res, test_instance)

    assert not result.success
    assert len(step_events(result, "STEP_UP_FOR_RETRY")) == 1 and proxy.refused == 2
    message = failure_message(result)
    assert "promotion failed for 1 of 1 targets" in message
    # typed, whichever way the dropped connection surfaces in httpx (reset or disconnect)
    assert "AtmosphereConnectionError" in message and f"http://127.0.0.1:{proxy.port}" in message
    assert pds_account["password"] not in message
    assert "atmosphere" not in entry_named(res, "ds").metadata
