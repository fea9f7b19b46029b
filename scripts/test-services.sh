#!/usr/bin/env bash
# Make sure every service the test suite talks to is installed and running on 127.0.0.1.
# PostgreSQL and Redis are preinstalled on these machines; start them if they are down.
set -euo pipefail
cd "$(dirname "$0")/.."

pg_up() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }
if ! pg_up; then
  if command -v pg_ctlcluster >/dev/null; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  fi
fi
pg_up && echo "postgres: up" || echo "postgres: NOT available (tests marked postgres will skip, or fail under CI)"

redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; }
if ! redis_up && command -v redis-server >/dev/null; then
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
  for _ in $(seq 1 50); do redis_up && break; sleep 0.1; done
fi
redis_up && echo "redis: up" || echo "redis: NOT available"

# Further services (S3 via Ceph RGW, the ATProto PDS) are installed by the scripts below
# when present; their pytest fixtures start and stop the servers.
for s in scripts/install-*.sh; do
  [ -f "$s" ] && bash "$s"
done
exit 0
