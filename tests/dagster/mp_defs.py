"""Definitions for the multiprocess test: several assets write to ONE SQLite index at once.

Child processes get this module from the forkserver preload, so everything is module
level; the index and data paths come from environment variables (as ``dagster.EnvVar``,
resolved in each step process) set by the test before the first run starts.
"""

import os
import time

import dagster as dg

from atdata_dagster.io_manager import AtdataIOManager
from atdata_dagster.resources import AtdataIndexResource, LocalDiskStoreConfig

from .helpers import row_stream

PARTITIONS = dg.StaticPartitionsDefinition([f"p{i}" for i in range(8)])
WRITERS = 3


def _writer(i: int) -> dg.AssetsDefinition:
    @dg.asset(name=f"writer_{i}", partitions_def=PARTITIONS, metadata={"atdata/maxcount": 50})
    def writer(context: dg.AssetExecutionContext):
        # wait until every writer of every concurrent run has started, so the writes overlap
        barrier = context.run.tags.get("atdata_test/barrier")
        if barrier:
            expected = int(context.run.tags["atdata_test/writers"])
            open(os.path.join(barrier, f"{context.partition_key}-{i}"), "w").close()
            deadline = time.monotonic() + 60
            while len(os.listdir(barrier)) < expected and time.monotonic() < deadline:
                time.sleep(0.02)
        start = 1000 * i + 100 * int(context.partition_key[1:])
        return dg.Output(row_stream(120, start=start))

    return writer


WRITER_ASSETS = [_writer(i) for i in range(WRITERS)]

if os.environ.get("ATDATA_MP_DSN"):  # the PostgreSQL variant of the test
    index_resource = AtdataIndexResource(
        dsn=dg.EnvVar("ATDATA_MP_DSN"),
        data_store=LocalDiskStoreConfig(root=dg.EnvVar("ATDATA_MP_DATA")),
        atmosphere=False,
    )
else:
    index_resource = AtdataIndexResource(
        path=dg.EnvVar("ATDATA_MP_INDEX"),
        data_store=LocalDiskStoreConfig(root=dg.EnvVar("ATDATA_MP_DATA")),
        atmosphere=False,
    )

defs = dg.Definitions(
    assets=WRITER_ASSETS,
    jobs=[
        dg.define_asset_job(
            "write_all",
            selection=dg.AssetSelection.assets(*WRITER_ASSETS),
            # forkserver with this module preloaded: each step is still its own process, but
            # starts in well under a second instead of re-importing everything (spawn)
            executor_def=dg.multiprocess_executor.configured(
                {
                    "max_concurrent": WRITERS,
                    "start_method": {"forkserver": {"preload_modules": [__name__]}},
                }
            ),
        )
    ],
    resources={"io_manager": AtdataIOManager(index=index_resource)},
)


def write_all_job() -> dg.JobDefinition:
    return defs.resolve_job_def("write_all")


def main(argv: list[str] | None = None) -> int:
    """``python -m tests.dagster.mp_defs PARTITION BARRIER WRITERS``: one run worker, as dagster dev starts.

    Uses the instance at ``$DAGSTER_HOME``; prints the step process ids as JSON.
    """
    import json
    import sys

    from tests.dagster import mp_defs  # by module name, so step processes can import it

    pk, barrier, writers = (argv if argv is not None else sys.argv[1:])[:3]
    with dg.DagsterInstance.get() as instance:
        result = dg.execute_job(
            dg.reconstructable(mp_defs.write_all_job),
            instance=instance,
            tags={"dagster/partition": pk, "atdata_test/barrier": barrier, "atdata_test/writers": writers},
        )
        failures = [str(e.event_specific_data.error) for e in result.get_step_failure_events()]
        pids = sorted({e.pid for e in result.all_events if e.is_step_start})
    print(json.dumps({"success": result.success, "pids": pids, "failures": failures}))
    return 0 if result.success else 1


if __name__ == "__main__":
    raise SystemExit(main())
