#!/usr/bin/env bash
# Install Debian's Chromium, which tests/dagster/test_browser.py and scripts/screenshot.py
# drive headless against `dagster dev` on loopback. Idempotent: a fast no-op when
# /usr/bin/chromium exists. Without root or apt it prints what to do and exits 0, so the
# browser test skips (or fails under CI=true).
set -euo pipefail

CHROMIUM=/usr/bin/chromium
if [ -x "$CHROMIUM" ]; then
  echo "chromium: already installed ($CHROMIUM)"
  exit 0
fi
if [ "$(id -u)" != "0" ]; then
  echo "chromium: not root; skipping install. Run as root: apt-get install chromium" >&2
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "chromium: apt-get not found; install Chromium at $CHROMIUM by hand to run the browser test" >&2
  exit 0
fi

echo "chromium: installing Debian's chromium"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
echo "chromium: installed $("$CHROMIUM" --version 2>/dev/null | head -1)"
