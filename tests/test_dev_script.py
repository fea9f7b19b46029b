"""`make dev` (scripts/dev.sh): a busy port is refused up front with the fix, before dagster starts."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_make_dev_refuses_a_port_in_use_and_suggests_another(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {**os.environ, "PORT": str(port), "DAGSTER_HOME": str(tmp_path / "home")}
        done = subprocess.run(["bash", str(ROOT / "scripts" / "dev.sh")], env=env, capture_output=True, text=True,
                              timeout=60)
    assert done.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use" in done.stderr
    assert f"make dev PORT={port + 1}" in done.stderr
    assert not (tmp_path / "home").exists()  # nothing was started or set up


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> set[int]:
    """Every live descendant of ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {c for c, p in parents.items() if p in frontier} - found
        found |= frontier
    return found


def test_make_dev_stops_cleanly_with_all_its_processes_on_sigterm(tmp_path):
    import signal
    import time
    import urllib.request

    port = _free_port()
    env = {**os.environ, "PORT": str(port), "DAGSTER_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen(["bash", str(ROOT / "scripts" / "dev.sh")], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2):
                    break
            except OSError:
                time.sleep(1)
        else:
            raise AssertionError("dagster dev did not start within 180 s")
        children = _children(proc.pid)
        assert children  # the webserver and the code server run as its children
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) is not None
        gone_by = time.monotonic() + 30  # the webserver and code server shut down on their own
        while {c for c in children if Path(f"/proc/{c}").exists()} and time.monotonic() < gone_by:
            time.sleep(0.5)
        assert not {c for c in children if Path(f"/proc/{c}").exists()}, "processes left running after SIGTERM"
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))  # nothing listens on the port any more
            s.listen()
    finally:
        if proc.poll() is None:
            proc.kill()
