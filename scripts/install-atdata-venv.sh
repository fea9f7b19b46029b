#!/usr/bin/env bash
# Create .cache/atdata-venv: a Python 3.12 virtualenv holding the real `atdata` library,
# which the interoperability suite (tests/compat/) drives in a subprocess to prove that
# what we write atdata reads and the other way round. atdata needs Python >= 3.12, our
# package runs on 3.11, so the two sides talk over JSON and files, never one process.
#
# Our own package is deliberately NOT installed into this venv: the atdata side must
# only ever see atdata, so a passing test cannot be our code reading our own bytes.
#
# Idempotent: a stamp file records what was installed; a second run does nothing.
# No Python 3.12 on the machine -> explain and exit 0 (the compat tests then skip,
# or fail under CI=true).
set -euo pipefail
cd "$(dirname "$0")/.."

ATDATA_VERSION="0.7.0b1"
VENV=".cache/atdata-venv"
# Everything atdata's providers, stores and manifest writer import at run time.
PACKAGES=(
  "atdata==${ATDATA_VERSION}"
  "psycopg[binary]>=3.1"
  "redis>=5"
  "fastparquet>=2024.11.0"
)
STAMP="$VENV/.installed-$(printf '%s\n' "${PACKAGES[@]}" | sha256sum | cut -c1-12)"

if [ -f "$STAMP" ] && [ -x "$VENV/bin/python" ]; then
  echo "atdata-venv: atdata ${ATDATA_VERSION} already installed in $VENV"
  exit 0
fi

find_python312() {
  local cand
  if [ -n "${ATDATA_PYTHON:-}" ] && [ -x "${ATDATA_PYTHON}" ]; then
    echo "$ATDATA_PYTHON"; return 0
  fi
  if command -v pyenv >/dev/null 2>&1; then
    cand="$(PYENV_VERSION="$(pyenv versions --bare 2>/dev/null | grep -E '^3\.12(\.|$)' | tail -1)" \
            pyenv which python3.12 2>/dev/null || true)"
    if [ -n "$cand" ] && [ -x "$cand" ]; then echo "$cand"; return 0; fi
  fi
  for cand in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python3.12 /root/.pyenv/versions/3.12*/bin/python3.12; do
    if [ -x "$cand" ]; then echo "$cand"; return 0; fi
  done
  cand="$(command -v python3.12 2>/dev/null || true)"
  # a pyenv shim that has no 3.12 behind it fails here, which is what we want
  if [ -n "$cand" ] && "$cand" -c 'import sys; assert sys.version_info[:2] == (3, 12)' >/dev/null 2>&1; then
    echo "$cand"; return 0
  fi
  return 1
}

if ! PY312="$(find_python312)"; then
  echo "atdata-venv: no Python 3.12 found (tried \$ATDATA_PYTHON, pyenv, ~/.pyenv/versions/3.12*, python3.12 on PATH)." >&2
  echo "atdata-venv: the atdata compatibility tests (tests/compat) will skip; under CI=true they fail." >&2
  echo "atdata-venv: install one (e.g. 'pyenv install 3.12') and rerun: bash scripts/install-atdata-venv.sh" >&2
  exit 0
fi

start=$(date +%s)
echo "atdata-venv: creating $VENV with $PY312 ($("$PY312" -V 2>&1))"
rm -rf "$VENV"
mkdir -p "$(dirname "$VENV")"
"$PY312" -m venv "$VENV"
# pip's notes about absent local index mirrors are noise here; keep real errors
pip_install() {
  "$VENV/bin/python" -m pip install -q "$@" 2>&1 | { grep -v 'is ignored: it is neither a file nor a directory' || true; }
  return "${PIPESTATUS[0]}"
}
# A failed install must not stop the rest of the test run: leave no half-built venv
# and exit 0, so the compat tests skip with their reason (and fail under CI=true).
fail() {
  echo "atdata-venv: $1; removing $VENV (the compat tests will skip, or fail under CI=true)" >&2
  rm -rf "$VENV"
  exit 0
}
pip_install --upgrade pip || fail "upgrading pip failed"
pip_install "${PACKAGES[@]}" || fail "pip install ${PACKAGES[*]} failed"
"$VENV/bin/python" - <<'EOF' || fail "atdata does not import"
import atdata, importlib.metadata as md
from atdata.index import Index  # noqa: F401  (fails loudly if the install is broken)
print("atdata-venv: atdata", md.version("atdata"), "importable")
EOF
touch "$STAMP"
echo "atdata-venv: done in $(( $(date +%s) - start ))s"
