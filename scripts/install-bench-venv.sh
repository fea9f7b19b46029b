#!/usr/bin/env bash
# Create .cache/bench-venv: the peers that benchmarks/bench_training compares against
# (Mosaic Streaming, LitData, Hugging Face datasets, webdataset, Lance) plus a CPU torch
# for the DataLoader runs. Never installed into the project's own dependencies or .venv.
#
# Our package is put on the path by the benchmark (PYTHONPATH=<repo>); this venv only
# holds the engine's runtime dependencies next to the peers, never Dagster.
# Idempotent: a stamp file records what was installed; a second run does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=".cache/bench-venv"
PY="${BENCH_PYTHON:-python3.11}"
# torch 2.13.0 is pinned: a CPU wheel of it is what pip must pick (a CUDA build is several GB).
PACKAGES=(
  "torch==2.13.0"
  "mosaicml-streaming"
  "litdata"
  "datasets"
  "webdataset"
  "pylance"
  "numpy"
  "msgpack>=1.0"
  "braceexpand"
  "sqlalchemy>=2.0"
  "psycopg[binary]>=3.1"
  "redis>=5"
  "boto3>=1.34"
  "atproto>=0.0.60"
  "pyarrow>=14"
  "psutil"
)
STAMP="$VENV/.installed-$(printf '%s\n' "${PACKAGES[@]}" | sha256sum | cut -c1-12)"
if [ -f "$STAMP" ] && [ -x "$VENV/bin/python" ]; then
  echo "bench-venv: already installed in $VENV"
  exit 0
fi
if ! command -v "$PY" >/dev/null 2>&1; then
  PY="$(dirname "$(readlink -f .venv/bin/python 2>/dev/null || echo python3)")/python3"
fi
start=$(date +%s)
rm -rf "$VENV"
mkdir -p "$(dirname "$VENV")"
"$PY" -m venv "$VENV"
# pip's notes about absent local index mirrors are noise here; keep real errors
pip_install() {
  "$VENV/bin/python" -m pip install -q "$@" 2>&1 | { grep -v 'is ignored: it is neither a file nor a directory' || true; }
  return "${PIPESTATUS[0]}"
}
pip_install --upgrade pip
pip_install "${PACKAGES[@]}"
# mosaicml-streaming pulls torchvision, whose registry wheel is built against a CUDA torch and
# cannot load next to the CPU torch; Mosaic only needs it for its vision datasets, which the
# benchmark never uses (it stands in a stub module for that import).
"$VENV/bin/python" -m pip uninstall -q -y torchvision
"$VENV/bin/python" - <<'PYEOF'
import importlib.metadata as md
for name in ("torch", "mosaicml-streaming", "litdata", "datasets", "webdataset", "pylance"):
    print(f"bench-venv: {name} {md.version(name)}")
PYEOF
touch "$STAMP"
echo "bench-venv: done in $(( $(date +%s) - start ))s"
