"""Definitions loaded by ``dagster dev`` in the promotion end-to-end test.

Everything comes from environment variables set by the test: the index and data
paths, the PDS URL and account (the password through ``dagster.EnvVar``, so it is
resolved at run time and never recorded), and the sensor's minimum interval.
"""

import os

import dagster as dg

from atdata_dagster.io_manager import AtdataIOManager
from atdata_dagster.promotion import build_promotion_job, build_promotion_schedule, build_promotion_sensor
from atdata_dagster.resources import AtdataIndexResource, LocalDiskStoreConfig

from .helpers import row_stream


@dg.asset(code_version="1", metadata={"atdata/promote": True, "atdata/maxcount": 8})
def promo_rows():
    """Twenty rows, marked for promotion to the atmosphere."""
    return dg.Output(row_stream(20))


@dg.asset(code_version="1", metadata={"atdata/promote": True})
def promo_more():
    """Five more rows, marked too; outside the sensor's asset_keys, so the schedule promotes it."""
    return dg.Output(row_stream(5, start=100))


@dg.asset(code_version="1")
def promo_plain():
    """Not marked: never promoted."""
    return dg.Output(row_stream(3, start=200))


index_resource = AtdataIndexResource(
    path=dg.EnvVar("ATDATA_PROMO_INDEX"),
    data_store=LocalDiskStoreConfig(root=dg.EnvVar("ATDATA_PROMO_DATA")),
    atmosphere_service_url=dg.EnvVar("ATDATA_PROMO_PDS_URL"),
    atmosphere_handle=dg.EnvVar("ATDATA_PROMO_HANDLE"),
    atmosphere_password=dg.EnvVar("ATDATA_PROMO_PASSWORD"),
)

promotion_job = build_promotion_job(retry_policy=dg.RetryPolicy(max_retries=2, delay=1))
# the sensor watches promo_rows only; promo_more is left to the schedule
promotion_sensor = build_promotion_sensor(
    promotion_job,
    minimum_interval_seconds=int(os.environ.get("ATDATA_PROMO_SENSOR_INTERVAL", "30")),
    asset_keys=["promo_rows"],
)
promotion_schedule = build_promotion_schedule("0 3 * * *", promotion_job, execution_timezone="UTC")

defs = dg.Definitions(
    assets=[promo_rows, promo_more, promo_plain],
    jobs=[promotion_job],
    sensors=[promotion_sensor],
    schedules=[promotion_schedule],
    resources={"atdata_index": index_resource, "io_manager": AtdataIOManager(index=index_resource)},
)
