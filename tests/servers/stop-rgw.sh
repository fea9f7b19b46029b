#!/usr/bin/env bash
# Stop the daemons started by start-rgw.sh DIR, each by its own pid file (never by name).
# The data stays in DIR: start-rgw.sh DIR PORT restarts the same cluster.
DIR=${1:?usage: stop-rgw.sh DIR}
for n in client.rgw.a osd.0 mon.a; do
  f="$DIR/run/$n.pid"; [ -f "$f" ] || continue
  pid=$(cat "$f"); kill "$pid" 2>/dev/null || { rm -f "$f"; continue; }
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
  rm -f "$f"
done
exit 0
