#!/usr/bin/env bash
# Install the Ceph RADOS Gateway (a real S3 server) that the S3 tests and benchmarks run
# on loopback. Idempotent: does nothing when `radosgw` is already on PATH. Without root
# or apt it prints what to do and exits 0, so the S3 tests skip (or fail under CI=true).
set -euo pipefail

if command -v radosgw >/dev/null 2>&1 && command -v ceph-mon >/dev/null 2>&1 \
   && command -v ceph-osd >/dev/null 2>&1; then
  echo "rgw: radosgw already installed ($(command -v radosgw))"
  exit 0
fi
if [ "$(id -u)" != "0" ]; then
  echo "rgw: not root; skipping install. Run as root: apt-get install ceph-mon ceph-osd radosgw" >&2
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "rgw: apt-get not found; install ceph-mon, ceph-osd and radosgw by hand to run the S3 tests" >&2
  exit 0
fi

echo "rgw: installing ceph-mon ceph-osd radosgw (~60 MB download)"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  ceph-mon ceph-osd radosgw >/dev/null
echo "rgw: installed $(radosgw --version 2>/dev/null | head -1)"
