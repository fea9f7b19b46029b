#!/usr/bin/env bash
# `make dev`: dagster dev on 127.0.0.1:${PORT:-3000} with the example loaded, telemetry off.
# DAGSTER_HOME defaults to .demo/dagster_home: it is kept between runs (so `make demo`'s runs and
# their materializations show up in the UI); set DAGSTER_HOME to use another, or `make clean` to reset.
# Ctrl-C / SIGTERM stop it cleanly: dagster dev gets the signal itself (exec) and stops its children.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT="${PORT:-3000}"
if ! .venv/bin/python - "$PORT" <<'PY'
import socket, sys
port = int(sys.argv[1])
with socket.socket() as s:
    # as the webserver binds: a listener still refuses, connections left in TIME_WAIT by a
    # dagster dev just stopped do not (without this, a restart would be refused for a minute)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        sys.exit(1)
PY
then
  echo "make dev: port $PORT on 127.0.0.1 is already in use (another dagster dev?)." >&2
  echo "          Stop it, or pick another port: make dev PORT=$((PORT + 1))" >&2
  exit 1
fi
export DAGSTER_HOME="${DAGSTER_HOME:-$PWD/.demo/dagster_home}"
mkdir -p "$DAGSTER_HOME"
[ -f "$DAGSTER_HOME/dagster.yaml" ] || printf 'telemetry:\n  enabled: false\n' > "$DAGSTER_HOME/dagster.yaml"
echo "make dev: http://127.0.0.1:$PORT  (DAGSTER_HOME=$DAGSTER_HOME; Ctrl-C to stop)"
exec .venv/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p "$PORT"
