"""`make bench`: run every benchmark in turn (each prints its own figures).

The S3 benchmark starts its own Ceph RGW and is skipped when radosgw is not installed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

BENCHMARKS = [
    ["benchmarks.bench_engine"],
    ["benchmarks.bench_dagster"],
    ["benchmarks.bench_providers", "--sizes", "1000,100000"],
    ["benchmarks.bench_s3"],
]


def main() -> int:
    failed = 0
    for module, *args in BENCHMARKS:
        if module.endswith("bench_s3") and not shutil.which("radosgw"):
            print(f"== {module}: skipped (radosgw not installed; run scripts/install-rgw.sh)")
            continue
        print(f"== {module} {' '.join(args)}", flush=True)
        failed += subprocess.call([sys.executable, "-m", module, *args]) != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
