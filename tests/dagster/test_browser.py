"""A real browser on the Dagster UI: the asset page shows the dataset's metadata.

``dagster dev`` runs on 127.0.0.1 with the end-to-end definitions (``e2e_defs``) and
one materialization of ``e2e_rows`` launched over GraphQL. The first-visit pop-up is
dismissed server-side (``mutation { setNuxSeen }``). Then headless Debian Chromium
renders the asset page (``--dump-dom`` after the single-page app has settled under a
virtual-time budget) and the test reads the rendered DOM: the row count, the columns
table and the CID must be what the index reports. A second dataset, ``outside_rows``, is
written with the engine before the server starts (as an atdata user would) and observed
through its observable source asset; its page must show the observation's row count,
CID and content identity, and Dagster must hold that identity as its data version.

Chromium comes from ``scripts/install-chromium.sh``. Without it the test skips with
the reason, or fails under ``CI=true``.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.fixtures.services import service_missing

from .dev_server import DevServer, dagster_dev_server
from .helpers import Row

CHROMIUM = os.environ.get("ATDATA_TEST_CHROMIUM", "/usr/bin/chromium")
#: flags from the conventions file (§8): no sandbox (root in CI), no GPU, no network chatter
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,900",
]
ASSET = "e2e_rows"
OUTSIDE = "outside_rows"  # written with the engine, not by Dagster; observed (e2e_defs.outside_rows)
OUTSIDE_ROWS = 25
#: the visible texts the asset page shows once its data has loaded
LOADED_MARKERS = ("Row count", "Column name", "atdata/cid")
NUX_TEXT = "Join the Dagster community"

pytestmark = pytest.mark.slow


# -- the rendered page ----------------------------------------------------------------
@dataclasses.dataclass
class Table:
    """A table's rows; each cell is the tuple of its visible text runs (tags, values)."""

    rows: list[list[tuple[str, ...]]]

    @property
    def header(self) -> list[str]:
        return [" ".join(cell) for cell in self.rows[0]] if self.rows else []

    @property
    def body(self) -> list[list[tuple[str, ...]]]:
        return self.rows[1:]


class RenderedPage(HTMLParser):
    """The visible text runs of a DOM dump, in document order, and its tables' cell texts."""

    SKIP = {"script", "style", "noscript", "head", "template"}

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.texts: list[str] = []
        self.tables: list[Table] = []
        self._skip = 0
        self._open: list[Table] = []  # tables being parsed (nested ones on top)
        self._cell: list[list[str] | None] = []  # per open table: the open cell's text parts
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self._skip += 1
        elif tag == "table":
            self._open.append(Table(rows=[]))
            self._cell.append(None)
        elif self._open and tag == "tr":
            self._open[-1].rows.append([])
        elif self._open and tag in ("td", "th"):
            self._cell[-1] = []

    def handle_endtag(self, tag):
        if tag in self.SKIP:
            self._skip = max(0, self._skip - 1)
        elif tag == "table" and self._open:
            self.tables.append(self._open.pop())
            self._cell.pop()
        elif self._open and tag in ("td", "th") and self._cell[-1] is not None:
            if self._open[-1].rows:
                self._open[-1].rows[-1].append(tuple(self._cell[-1]))
            self._cell[-1] = None

    def handle_data(self, data):
        text = " ".join(data.split())
        if self._skip or not text:
            return
        self.texts.append(text)
        if self._cell and self._cell[-1] is not None:
            self._cell[-1].append(text)

    @property
    def text(self) -> str:
        return " ".join(self.texts)

    def value_after(self, label: str) -> str:
        """The visible text that directly follows the text ``label``."""
        i = self.texts.index(label)
        return self.texts[i + 1]

    def table_with_header(self, *header: str) -> Table:
        for t in self.tables:
            if t.header[: len(header)] == list(header):
                return t
        raise AssertionError(f"no table with header {header!r}; headers: {[t.header for t in self.tables]}")


def render(url: str, *, attempts: int = 3, markers: tuple[str, ...] = LOADED_MARKERS) -> RenderedPage:
    """``url`` as rendered by headless Chromium (a fresh profile each time).

    The page is dumped once virtual time has run for the budget (Chromium pauses virtual
    time while network fetches are pending). On a loaded machine a dump can still come
    before the asset's data arrived; it is then retried with a larger budget.
    """
    page = None
    for attempt in range(1, attempts + 1):
        with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
            proc = subprocess.run(
                [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                 f"--virtual-time-budget={15000 * attempt}", "--dump-dom", url],
                capture_output=True, text=True, timeout=180,
            )
        assert proc.returncode == 0, f"chromium exited {proc.returncode}:\n{proc.stderr[-3000:]}"
        page = RenderedPage(proc.stdout)
        if all(m in page.texts for m in markers):
            return page
    assert page is not None
    raise AssertionError(f"the asset page did not finish rendering after {attempts} dumps; it shows:\n{page.text[:3000]}")


OBSERVATION = """
query($path: [String!]!) { assetOrError(assetKey: {path: $path}) { ... on Asset {
  assetObservations(limit: 1) { runId tags { key value } }
} } }
"""


# -- fixtures -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chromium() -> str:
    if not os.access(CHROMIUM, os.X_OK):
        service_missing("chromium", f"{CHROMIUM} not found; install it with: bash scripts/install-chromium.sh")
    return CHROMIUM


@pytest.fixture(scope="module")
def materialized(chromium, tmp_path_factory) -> tuple[DevServer, Path]:
    """``dagster dev`` with ``e2e_rows`` materialized once and the first-visit pop-up dismissed."""
    tmp = tmp_path_factory.mktemp("browser")
    env = {"ATDATA_E2E_INDEX": str(tmp / "index.db"), "ATDATA_E2E_DATA": str(tmp / "data")}
    _write_outside_dagster(tmp)
    with dagster_dev_server(tmp, "tests.dagster.e2e_defs", "atdata_e2e", env=env) as server:
        server.wait_loaded()
        server.wait_run(server.launch("__ASSET_JOB", assets=[[ASSET]]), timeout=120)
        # "Observe" on the source asset's page launches the same job with the source selected
        server.wait_run(server.launch("__ASSET_JOB", assets=[[OUTSIDE]]), timeout=120)
        assert server.gql("mutation { setNuxSeen }")["setNuxSeen"] is True
        yield server, tmp


def _write_outside_dagster(tmp: Path) -> None:
    """What a user of atdata (or the CLI) does: write a dataset into the same index, no Dagster."""
    from atdata_dagster import local

    from .helpers import row_stream

    with local.Index(path=str(tmp / "index.db"), data_store=local.LocalDiskStore(str(tmp / "data")),
                     atmosphere=None) as index:
        index.write_samples(row_stream(OUTSIDE_ROWS), name=OUTSIDE)


def _entry(tmp: Path, name: str):
    from atdata_dagster.resources import AtdataIndexResource, LocalDiskStoreConfig

    index = AtdataIndexResource(
        path=str(tmp / "index.db"), data_store=LocalDiskStoreConfig(root=str(tmp / "data")), atmosphere=False
    ).build_index()
    try:
        return index.get_dataset(name)
    finally:
        index.close()


@pytest.fixture(scope="module")
def index_entry(materialized):
    """What the index records for the materialized dataset."""
    return _entry(materialized[1], ASSET)


@pytest.fixture(scope="module")
def outside_entry(materialized):
    """What the index records for the dataset written outside Dagster."""
    return _entry(materialized[1], OUTSIDE)


@pytest.fixture(scope="module")
def observed_page(materialized) -> RenderedPage:
    server, _ = materialized
    return render(f"{server.gql.base}/assets/{OUTSIDE}", markers=("Latest observation", "Row count", "atdata/cid"))


@pytest.fixture(scope="module")
def asset_page(materialized) -> RenderedPage:
    server, _ = materialized
    return render(f"{server.gql.base}/assets/{ASSET}")


# -- the test -------------------------------------------------------------------------
# One test on one server: the dagster dev start and the run are most of the cost, and
# under pytest 9.2 xdist's --dist loadgroup no longer keeps a module's tests on one worker
# (pytest-dev/pytest-xdist#1386), so separate tests would each start their own server.
def test_chromium_renders_the_materialized_and_the_observed_asset_pages_with_what_the_index_reports(
    materialized, asset_page, index_entry, observed_page, outside_entry
):
    from atdata_dagster.metadata import column_schema

    server, _ = materialized
    # the first-visit pop-up was dismissed server-side: the instance says so, nothing covers the page
    assert server.gql("{ shouldShowNux }")["shouldShowNux"] is False
    assert (server.home / ".nux" / "nux.yaml").is_file()
    assert NUX_TEXT not in asset_page.text

    # the row count (Status section) is the number of samples the index holds
    rows = index_entry.metadata["stats"]["num_samples"]
    assert rows > 0
    assert asset_page.value_after("Row count") in {str(rows), f"{rows:,}"}

    # the Columns table lists the sample type's fields, in order, with their types
    columns = asset_page.table_with_header("Column name", "Type")
    assert [" ".join(row[0]) for row in columns.body] == [f.name for f in dataclasses.fields(Row)]
    types = [row[1][0] for row in columns.body]  # the type tag (a constraint tag may follow)
    assert types == [c.type for c in column_schema(Row).columns]

    # the Metadata table shows the dataset's CID, the one the index reports for the name
    assert index_entry.cid.startswith("bafy")
    metadata = asset_page.table_with_header("Key", "Timestamp", "Value")
    values = {" ".join(row[0]): " ".join(row[-1]) for row in metadata.body if row}
    assert values["atdata/cid"] == index_entry.cid
    assert values["atdata/name"] == ASSET
    assert index_entry.cid in asset_page.texts
    # sizes read as sizes; the data version (location independent) is shown next to the CID
    from atdata_dagster.metadata import human_bytes

    assert values["atdata/size"] == human_bytes(index_entry.metadata["stats"]["total_bytes"])
    assert values["atdata/content_id"] == index_entry.content_id

    # the dataset written outside Dagster: an observable source asset ("External Asset",
    # with an Observe button) whose latest observation carries the entry's row count and CID
    assert "External Asset" in observed_page.texts and "Observe" in observed_page.texts
    assert "Latest observation" in observed_page.texts
    assert observed_page.value_after("Row count") == str(OUTSIDE_ROWS)
    observed = observed_page.table_with_header("Key", "Timestamp", "Value")
    seen = {" ".join(row[0]): " ".join(row[-1]) for row in observed.body if row}
    assert seen["atdata/cid"] == outside_entry.cid != index_entry.cid
    assert seen["atdata/content_id"] == outside_entry.content_id
    assert seen["atdata/name"] == OUTSIDE and seen["atdata/repo"] == "local"
    assert seen["atdata/schema_ref"] == outside_entry.schema_ref
    # Dagster recorded the entry's content identity as the source asset's data version
    version = server.gql(OBSERVATION, {"path": [OUTSIDE]})["assetOrError"]["assetObservations"][0]
    tags = {t["key"]: t["value"] for t in version["tags"]}
    assert tags["dagster/data_version"] == outside_entry.content_id
