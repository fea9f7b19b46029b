"""Definitions loaded by ``dagster dev`` in the end-to-end test (a python_module code location).

The index and data paths come from environment variables set by the test, through
``dagster.EnvVar``, so nothing is written under the user's home.
"""

import dagster as dg

from atdata_dagster.checks import build_dataset_checks
from atdata_dagster.dataset import Dataset
from atdata_dagster.io_manager import AtdataIOManager
from atdata_dagster.observe import observable_dataset
from atdata_dagster.resources import AtdataIndexResource, LocalDiskStoreConfig

from .helpers import Row, row_stream


@dg.asset(kinds={"webdataset"}, code_version="1", metadata={"atdata/maxcount": 16})
def e2e_rows():
    """Forty rows, streamed from a generator."""
    return dg.Output(row_stream(40))


@dg.asset(kinds={"webdataset"}, code_version="1")
def e2e_even(e2e_rows: Dataset[Row]):
    """The even-labelled rows of ``e2e_rows``, read lazily."""
    return dg.Output(r for r in e2e_rows.ordered() if r.label % 2 == 0)


#: a dataset written outside Dagster (the browser test writes it with the engine), observed
outside_rows = observable_dataset("outside_rows", group_name="outside")

index = AtdataIndexResource(
    path=dg.EnvVar("ATDATA_E2E_INDEX"),
    data_store=LocalDiskStoreConfig(root=dg.EnvVar("ATDATA_E2E_DATA")),
    atmosphere=False,
)

defs = dg.Definitions(
    assets=[e2e_rows, e2e_even, outside_rows],
    asset_checks=build_dataset_checks(e2e_rows, checks=["checksums"]),
    resources={"io_manager": AtdataIOManager(index=index), "atdata": index},
)
