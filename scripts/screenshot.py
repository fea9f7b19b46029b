#!/usr/bin/env python
"""Reproduce the README screenshot of the example's asset page (``docs/images/asset-page.png``).

1. Materialize the whole example (``example_project/demo.py``: ``digits_raw``, then
   both partitions of ``digits_split`` and ``digits_features`` with their checks) into
   a fresh scratch directory (``ATDATA_EXAMPLE_HOME``, with its own ``DAGSTER_HOME``).
2. Start ``dagster dev`` on 127.0.0.1 on that instance with the repository's
   ``workspace.yaml``, and dismiss the first-visit pop-up server-side
   (``mutation { setNuxSeen }``).
3. Have headless Chromium check that the asset page rendered its metadata (row count,
   columns table, the CID the index reports, upstream lineage) and then take the
   screenshot. The default view is the asset's Events tab (the latest materialization:
   the ``test`` partition) rendered at 0.7 device pixels per CSS pixel, so the whole
   metadata table, down to ``atdata/upstream``, fits one 1400x900 image.

Run from the repository root: ``.venv/bin/python scripts/screenshot.py`` (about a minute).
Needs ``/usr/bin/chromium`` (``scripts/install-chromium.sh``). Nothing outside the
scratch directory and the output file is written; both servers stop at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT))  # atdata_dagster, to read the example's index
LOCATION = "atdata_example"  # workspace.yaml
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars",
]
#: visible texts the asset page shows once its data has loaded (checked before the shot)
MUST_SHOW = ("row_count", "Column name", "atdata/cid", "atdata/upstream")
VIEWS = {"overview": "", "events": "?view=events", "partitions": "?view=partitions"}
LOCATIONS = """{ workspaceOrError { ... on Workspace { locationEntries { name
  locationOrLoadError { __typename ... on PythonError { message } } } } } }"""


def log(msg: str) -> None:
    print(f"screenshot: {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gql(base: str, query: str) -> dict:
    req = urllib.request.Request(
        base + "/graphql", data=json.dumps({"query": query}).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        out = json.loads(r.read())
    if out.get("errors"):
        raise RuntimeError(f"GraphQL errors: {out['errors']}")
    return out["data"]


def wait(what: str, fn, proc: subprocess.Popen, server_log: Path, timeout: float = 120):
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"dagster dev exited ({proc.returncode}) waiting for {what}:\n{server_log.read_text()[-3000:]}")
        try:
            value = fn()
            if value:
                return value
        except (OSError, ValueError, RuntimeError) as exc:
            last = exc
        time.sleep(0.5)
    raise SystemExit(f"timed out waiting for {what} ({last!r}):\n{server_log.read_text()[-3000:]}")


def location_loaded(base: str) -> bool:
    for e in gql(base, LOCATIONS)["workspaceOrError"]["locationEntries"]:
        state = e["locationOrLoadError"]
        if e["name"] == LOCATION and state:
            if state["__typename"] != "RepositoryLocation":
                raise SystemExit(f"code location {LOCATION} failed to load: {state.get('message')}")
            return True
    return False


def chromium(binary: str, url: str, *args: str, budget_ms: int) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        return subprocess.run(
            [binary, *FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}", *args, url],
            capture_output=True, text=True, timeout=180,
        )


def visible_text(html: str) -> str:
    html = re.sub(r"<(script|style|head)\b.*?</\1>", " ", html, flags=re.S | re.I)
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def index_cids(home: Path, asset: str) -> list[str]:
    """The CIDs of the index entries the example wrote for ``asset`` (all its partitions)."""
    from atdata_dagster.resources import AtdataIndexResource, LocalDiskStoreConfig

    index = AtdataIndexResource(
        path=str(home / "index.db"), data_store=LocalDiskStoreConfig(root=str(home / "data")), atmosphere=False
    ).build_index()
    try:
        cids = [e.cid for e in index.list_entries() if e.name == asset or e.name.startswith(f"{asset}/")]
    finally:
        index.close()
    if not cids:
        raise SystemExit(f"the example wrote no index entry for {asset!r}")
    return cids


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "images" / "asset-page.png"), help="PNG to write")
    ap.add_argument("--asset", default="digits_features", help="asset key (one component) whose page to capture")
    ap.add_argument("--view", choices=sorted(VIEWS), default="events", help="which tab of the asset page")
    ap.add_argument("--size", default="1400x900", help="size of the PNG, WIDTHxHEIGHT pixels")
    ap.add_argument("--scale", type=float, default=0.7,
                    help="device pixels per CSS pixel (below 1 fits more of the page into the PNG)")
    ap.add_argument("--chromium", default=os.environ.get("CHROMIUM", "/usr/bin/chromium"))
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory (index, shards, DAGSTER_HOME)")
    args = ap.parse_args()

    if not os.access(args.chromium, os.X_OK):
        raise SystemExit(f"{args.chromium} not found; install it with: bash scripts/install-chromium.sh")
    width, height = (int(v) for v in args.size.lower().split("x"))
    window = f"--window-size={round(width / args.scale)},{round(height / args.scale)}"
    work = Path(tempfile.mkdtemp(prefix="atdata-screenshot-"))
    home = work / "dagster_home"  # the one example_project/demo.py uses under ATDATA_EXAMPLE_HOME
    env = {
        **os.environ,
        "ATDATA_EXAMPLE_HOME": str(work),
        "DAGSTER_HOME": str(home),
        "DAGSTER_DISABLE_TELEMETRY": "yes",
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
    }
    env.pop("ATDATA_HANDLE", None)  # never publish from here
    proc = None
    try:
        log(f"materializing the example into {work}")
        demo = subprocess.run([sys.executable, "-m", "example_project.demo"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=600)
        if demo.returncode != 0:
            raise SystemExit(f"the example failed ({demo.returncode}):\n{demo.stdout[-3000:]}\n{demo.stderr[-3000:]}")

        port = free_port()
        base = f"http://127.0.0.1:{port}"
        server_log = work / "dagster-dev.log"
        log(f"starting dagster dev on {base}")
        with open(server_log, "wb") as out:
            proc = subprocess.Popen(
                [str(VENV_BIN / "dagster"), "dev", "-w", str(ROOT / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                # a background job of a non-interactive shell inherits SIGINT ignored: undo that,
                # or dagster dev would not stop on the SIGINT below
                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
            )

        def server_info():
            with urllib.request.urlopen(base + "/server_info", timeout=5) as r:
                return json.loads(r.read()).get("dagster_version")

        wait("the webserver", server_info, proc, server_log)
        wait(f"the code location {LOCATION}", lambda: location_loaded(base), proc, server_log)
        if gql(base, "mutation { setNuxSeen }")["setNuxSeen"] is not True:
            raise SystemExit("setNuxSeen did not dismiss the first-visit pop-up")

        cids = index_cids(work, args.asset)
        url = f"{base}/assets/{args.asset}{VIEWS[args.view]}"
        for attempt in (1, 2, 3):
            budget = 15000 * attempt
            dump = chromium(args.chromium, url, "--dump-dom", window, budget_ms=budget)
            text = visible_text(dump.stdout)
            missing = [m for m in MUST_SHOW if m not in text]
            if not any(cid in text for cid in cids):
                missing.append(f"one of the CIDs the index holds for {args.asset} {cids}")
            if dump.returncode == 0 and not missing and "Join the Dagster community" not in text:
                break
            log(f"attempt {attempt}: the page does not show {missing} yet")
        else:
            raise SystemExit(f"the asset page never showed {missing}; it shows:\n{text[:2000]}")

        out_png = Path(args.out).resolve()
        out_png.parent.mkdir(parents=True, exist_ok=True)
        shot = chromium(args.chromium, url, f"--screenshot={out_png}", window,
                        f"--force-device-scale-factor={args.scale}", budget_ms=budget)
        if shot.returncode != 0 or not out_png.is_file():
            raise SystemExit(f"chromium failed to take the screenshot ({shot.returncode}):\n{shot.stderr[-3000:]}")
        log(f"wrote {out_png} ({out_png.stat().st_size:,} bytes, {width}x{height}) of {url}")
        return 0
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
