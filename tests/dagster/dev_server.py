"""``dagster dev`` as a subprocess for end-to-end tests, for any test definitions module.

Generalizes the ``dagster_dev`` fixture of ``test_dagster_dev.py`` (which is fixed to
``e2e_defs`` and its environment): :func:`dagster_dev_server` takes the module,
location name and extra environment. The GraphQL client, the wait loop and the
launch/status queries are reused from there, not copied. Conventions §7: loopback
only, fresh ``DAGSTER_HOME`` with telemetry off, ``start_new_session=True`` and
SIGINT to stop.
"""

import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .test_dagster_dev import LAUNCH, LOCATIONS, RUN_STATUS, ROOT, GraphQL, _free_port, _wait

__all__ = ["DevServer", "FAST_QUEUE", "dagster_dev_server", "GraphQL", "LAUNCH", "RUN_STATUS"]

#: the daemon's queued-run coordinator, dequeuing every second instead of every 5 s
FAST_QUEUE = """run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    dequeue_interval_seconds: 1
"""


@dataclass
class DevServer:
    """A running ``dagster dev``: GraphQL client, process, log file, home and location."""

    gql: GraphQL
    proc: subprocess.Popen
    log: Path
    home: Path
    location: str

    def wait(self, what: str, fn, timeout: float = 60):
        """Poll ``fn`` until it returns something truthy (fails early if the server died)."""
        return _wait(what, fn, timeout, self.proc, self.log)

    def wait_loaded(self, timeout: float = 90) -> None:
        def loaded():
            for e in self.gql(LOCATIONS)["workspaceOrError"]["locationEntries"]:
                state = e["locationOrLoadError"]
                if e["name"] == self.location and state:
                    assert state["__typename"] == "RepositoryLocation", state
                    return True
            return False

        self.wait("the code location", loaded, timeout)

    def selector(self, **extra) -> dict:
        return {"repositoryLocationName": self.location, "repositoryName": "__repository__", **extra}

    def launch(self, job: str, *, assets: list[list[str]] | None = None, run_config: dict | None = None,
               tags: dict | None = None) -> str:
        """Launch a run over GraphQL ``launchRun``; return its id."""
        params: dict = {"selector": self.selector(jobName=job)}
        if assets:
            params["selector"]["assetSelection"] = [{"path": p} for p in assets]
        if run_config is not None:
            params["runConfigData"] = run_config
        if tags:
            params["executionMetadata"] = {"tags": [{"key": k, "value": v} for k, v in tags.items()]}
        out = self.gql(LAUNCH, {"p": params})["launchRun"]
        assert out["__typename"] == "LaunchRunSuccess", out
        return out["run"]["runId"]

    def wait_run(self, run_id: str, timeout: float = 60) -> None:
        """Wait until the run succeeded (fail with the log tail if it failed or was canceled)."""

        def finished():
            status = self.gql(RUN_STATUS, {"id": run_id})["runOrError"]["status"]
            assert status not in ("FAILURE", "CANCELED"), f"run {run_id} {status}:\n{self.log.read_text()[-3000:]}"
            return status == "SUCCESS"

        self.wait(f"run {run_id}", finished, timeout)


@contextlib.contextmanager
def dagster_dev_server(tmp_path: Path, module: str, location: str, env: dict[str, str] | None = None,
                       start_timeout: float = 90, instance_yaml: str = "") -> Iterator[DevServer]:
    """Run ``dagster dev`` on 127.0.0.1 with ``module`` as the code location ``location``.

    ``instance_yaml`` is appended to ``$DAGSTER_HOME/dagster.yaml`` (e.g. a faster
    ``run_coordinator`` dequeue interval, see :data:`FAST_QUEUE`).
    """
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n" + instance_yaml)
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(
        "load_from:\n"
        "  - python_module:\n"
        f"      module_name: {module}\n"
        f"      working_directory: {ROOT}\n"
        f"      location_name: {location}\n"
    )
    port = _free_port()
    full_env = {
        **os.environ,
        **(env or {}),
        "DAGSTER_HOME": str(home),
        "DAGSTER_DISABLE_TELEMETRY": "yes",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    }
    log = tmp_path / "dagster-dev.log"
    dagster = Path(sys.executable).with_name("dagster")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(dagster), "dev", "-w", str(workspace), "-h", "127.0.0.1", "-p", str(port)],
            cwd=str(ROOT), env=full_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    server = DevServer(GraphQL(port), proc, log, home, location)
    try:
        server.wait("the webserver", lambda: server.gql.get("/server_info").get("dagster_version"), start_timeout)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:  # pragma: no cover - last resort, our own session only
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
