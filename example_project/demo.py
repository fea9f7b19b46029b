"""`make demo`: materialize the whole example headless on the embedded default.

Runs ``digits_raw`` then both partitions of ``digits_split`` and ``digits_features``
(with their checks) against a project-local Dagster instance (``.demo/dagster_home``,
which ``make dev`` shows too), then prints the index entries and their lineage.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings

import dagster as dg

from example_project.definitions import (
    HOME,
    SPLITS,
    checks,
    defs,
    digits_classifier,
    digits_features,
    digits_raw,
    digits_split,
    index,
)


def _instance() -> dg.DagsterInstance:
    home = HOME / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    cfg = home / "dagster.yaml"
    if not cfg.exists():
        cfg.write_text("telemetry:\n  enabled: false\n")
    os.environ["DAGSTER_HOME"] = str(home)
    return dg.DagsterInstance.get()


def _step(label: str, log, run) -> dg.ExecuteInProcessResult:
    """Run one materialization with Dagster's log lines going to ``log``; print one summary line."""
    print(f"  {label:<44}", end="", flush=True)
    with contextlib.redirect_stderr(log):
        result = run()
    evaluations = result.get_asset_check_evaluations()
    passed = sum(1 for e in evaluations if e.passed)
    checks_text = f", checks {passed}/{len(evaluations)} passed" if evaluations else ""
    print(f"{'ok' if result.success else 'FAILED'}{checks_text}")
    return result


def main() -> int:
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    instance = _instance()
    resources = defs.resources
    assets = [digits_raw, digits_split, digits_features]
    log_path = HOME / "demo.log"
    print(f"materializing the example (Dagster's full log: {log_path})")
    with open(log_path, "a", encoding="utf-8") as log:
        ok = _step("digits_raw", log, lambda: dg.materialize(
            assets + checks, selection=[digits_raw], resources=resources, instance=instance, raise_on_error=True)).success
        for split in SPLITS.get_partition_keys():
            ok &= _step(f"digits_split, digits_features [{split}]", log, lambda split=split: dg.materialize(
                assets + checks, selection=[digits_split, digits_features], partition_key=split,
                resources=resources, instance=instance, raise_on_error=True)).success
        trained = _step("digits_classifier", log, lambda: dg.materialize(
            assets + [digits_classifier], selection=[digits_classifier], resources=resources, instance=instance,
            raise_on_error=True))
    ok &= trained.success
    model = trained.asset_materializations_for_node("digits_classifier")[0].metadata
    idx = index.build_index()  # EnvVar fields (the scale-out settings) are read here
    try:
        where = "ATDATA_INDEX_DSN (PostgreSQL)" if os.environ.get("ATDATA_INDEX_DSN") else HOME / "index.db"
        shards = f"s3://{os.environ['ATDATA_S3_BUCKET']}" if os.environ.get("ATDATA_S3_BUCKET") else HOME / "data"
        print(f"\nindex {where}  shards {shards}\n")
        print(f"{'NAME':<44} {'SAMPLES':>7} {'SHARDS':>6} {'BYTES':>10}  CID")
        for e in sorted(idx.list_entries(), key=lambda e: e.name):
            s = (e.metadata or {}).get("stats", {})
            print(f"{e.name:<44} {s.get('num_samples', '?'):>7} {len(e.data_urls):>6} {s.get('total_bytes', 0):>10,}  {e.cid}")
        print("\nlineage")
        for e in sorted(idx.list_entries(), key=lambda e: e.name):
            lin = (e.metadata or {}).get("lineage") or {}
            ups = ", ".join(f"{'/'.join(u['asset_key'])}{'[' + u['partition'] + ']' if u.get('partition') else ''} {u['cid'][:20]}…"
                            for u in lin.get("upstream") or []) or "(source)"
            print(f"  {e.name:<42} <- {ups}")
        print(f"  {'digits_classifier (model)':<42} <- digits_features[train] {model['atdata/trained_on'].value[:20]}…"
              f"  test accuracy {model['test_accuracy'].value:.3f}")
    finally:
        idx.close()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
