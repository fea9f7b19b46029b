#!/usr/bin/env bash
# Create .cache/dg-venv: the `dg` command line (package dagster-dg-cli) with this package
# installed (editable), for tests/dagster/test_components.py, which runs `dg check defs`
# and `dg list defs --json` on a throw-away dg project.
#
# Why a venv of its own: dagster-dg-cli pins dagster core to its own exact version
# (1.13.27 when this was written), older than the dagster in .venv; installing it there
# would downgrade dagster under dagster-webserver. Here pip picks a matching set, and
# `dg` loads the component registry in its own process, so it needs atdata_dagster
# importable next to it. The throw-away project's definitions still load in .venv.
#
# Idempotent: a stamp records the requirement and the pyproject.toml it was installed
# from; a second run with both unchanged does nothing. A failed install leaves no venv
# and exits 0: the dg tests then skip (locally) or fail (under CI=true) with the reason.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

VENV=".cache/dg-venv"
DG_REQUIREMENT="dagster-dg-cli>=1.13,<1.14"
STAMP="$VENV/.installed-$( { echo "$DG_REQUIREMENT"; cat pyproject.toml; } | sha256sum | cut -c1-12)"

if [ -f "$STAMP" ] && "$VENV/bin/dg" --version >/dev/null 2>&1; then
  echo "dg: $("$VENV/bin/dg" --version) already installed in $VENV"
  exit 0
fi

PY="${DG_PYTHON:-python3}"
if ! "$PY" -c 'import sys; assert sys.version_info >= (3, 10)' >/dev/null 2>&1; then
  echo "dg: no Python >= 3.10 at '$PY' (set DG_PYTHON); the dg tests will skip, or fail under CI=true" >&2
  exit 0
fi

fail() {
  echo "dg: $1; removing $VENV (the dg tests will skip, or fail under CI=true)" >&2
  rm -rf "$VENV"
  exit 0
}

start=$(date +%s)
echo "dg: creating $VENV with $PY ($("$PY" -V 2>&1)); installing $DG_REQUIREMENT and atdata-dagster (editable)"
rm -rf "$VENV"
mkdir -p "$(dirname "$VENV")"
"$PY" -m venv "$VENV" || fail "python -m venv failed"
# pip's notes about absent local index mirrors and setuptools' deprecation banners are noise
pip_install() {
  "$VENV/bin/python" -m pip install -q "$@" 2>&1 \
    | { grep -v -e 'is ignored: it is neither a file nor a directory' -e 'BuildBackendWarning' || true; }
  return "${PIPESTATUS[0]}"
}
pip_install "$DG_REQUIREMENT" -e "$ROOT" || fail "pip install $DG_REQUIREMENT -e . failed"
"$VENV/bin/dg" --version >/dev/null || fail "dg does not run"
"$VENV/bin/python" -c 'import atdata_dagster.components' || fail "atdata_dagster.components does not import next to dg"
touch "$STAMP"
echo "dg: $("$VENV/bin/dg" --version) installed in $(( $(date +%s) - start ))s"
