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
