"""Definitions for concurrent Dagster runs that materialize the SAME asset keys at once.

Several run worker processes (``python -m tests.adversarial.writers_dagster_defs SEED
BARRIER WRITERS``) each run ``write_shared``: two unpartitioned assets, each step its
own process (multiprocess executor, forkserver). Every step waits on a file barrier
until all steps of all runs have started, then returns samples derived from the run's
seed, so each run writes different data under the same two dataset names into one
index. The index comes from ``$ATDATA_MW_KIND`` / ``$ATDATA_MW_TARGET`` (sqlite path,
PostgreSQL DSN or Redis URL) and ``$ATDATA_MW_DATA``.
"""

import json
import os
import sys
import time

import dagster as dg

from atdata_dagster.io_manager import AtdataIOManager
from atdata_dagster.resources import AtdataIndexResource, LocalDiskStoreConfig

from tests.adversarial.writers_worker import items_for

ASSETS = ("shared_a", "shared_b")


def _asset(i: int, name: str) -> dg.AssetsDefinition:
    @dg.asset(name=name, metadata={"atdata/maxcount": 5})
    def shared(context: dg.AssetExecutionContext):
        barrier = context.run.tags["atdata_test/barrier"]
        expected = int(context.run.tags["atdata_test/writers"])
        open(os.path.join(barrier, f"{context.run_id}-{name}"), "w").close()
        deadline = time.monotonic() + 90
        while len(os.listdir(barrier)) < expected and time.monotonic() < deadline:
            time.sleep(0.02)
        seed = int(context.run.tags["atdata_test/seed"])
        return items_for(2000 + 10 * seed + i, seed)

    return shared


SHARED_ASSETS = [_asset(i, n) for i, n in enumerate(ASSETS)]

_kind = os.environ.get("ATDATA_MW_KIND", "sqlite")
_target = {"sqlite": "path", "postgres": "dsn", "redis": "redis_url"}[_kind]
index_resource = AtdataIndexResource(
    **{_target: dg.EnvVar("ATDATA_MW_TARGET")},
    data_store=LocalDiskStoreConfig(root=dg.EnvVar("ATDATA_MW_DATA")),
    atmosphere=False,
)

defs = dg.Definitions(
    assets=SHARED_ASSETS,
    jobs=[
        dg.define_asset_job(
            "write_shared",
            selection=dg.AssetSelection.assets(*SHARED_ASSETS),
            executor_def=dg.multiprocess_executor.configured(
                {"max_concurrent": len(ASSETS), "start_method": {"forkserver": {"preload_modules": [__name__]}}}
            ),
        )
    ],
    resources={"io_manager": AtdataIOManager(index=index_resource)},
)


def write_shared_job() -> dg.JobDefinition:
    return defs.resolve_job_def("write_shared")


def main(argv: list[str] | None = None) -> int:
    """One run worker: run ``write_shared`` with seed SEED; print the run id and outcome as JSON."""
    from tests.adversarial import writers_dagster_defs  # by module name, so step processes can import it

    seed, barrier, writers = (argv if argv is not None else sys.argv[1:])[:3]
    with dg.DagsterInstance.get() as instance:
        result = dg.execute_job(
            dg.reconstructable(writers_dagster_defs.write_shared_job),
            instance=instance,
            tags={"atdata_test/seed": seed, "atdata_test/barrier": barrier, "atdata_test/writers": writers},
        )
        failures = [str(e.event_specific_data.error) for e in result.get_step_failure_events()]
    print(json.dumps({"success": result.success, "run_id": result.run_id, "failures": failures}))
    return 0 if result.success else 1


if __name__ == "__main__":
    raise SystemExit(main())
