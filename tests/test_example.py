"""The example project: it loads, and `make demo`'s path materializes every dataset with lineage."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

ROOT = Path(__file__).resolve().parent.parent


def test_example_definitions_load_with_checks_sensor_and_schedule_stopped():
    from example_project.definitions import defs

    dg.Definitions.validate_loadable(defs)
    repo = defs.get_repository_def()
    assert {s.name for s in repo.sensor_defs} == {"atdata_promotion_sensor"}
    assert all(s.default_status == dg.DefaultSensorStatus.STOPPED for s in repo.sensor_defs)
    assert all(s.default_status == dg.DefaultScheduleStatus.STOPPED for s in repo.schedule_defs)
    for key in ("digits_raw", "digits_split", "digits_features"):
        spec = defs.resolve_assets_def(key).specs_by_key[dg.AssetKey(key)]
        assert spec.code_version and "dagster/kind/webdataset" in spec.tags and spec.description
        refs = spec.metadata["dagster/code_references"].code_references  # the UI's "Open source" link
        assert refs[0].file_path.endswith("example_project/definitions.py") and refs[0].line_number > 0


def test_demo_materializes_every_dataset_and_prints_entries_and_lineage(tmp_path):
    env = {**os.environ, "ATDATA_EXAMPLE_HOME": str(tmp_path)}
    env.pop("ATDATA_HANDLE", None)
    out = subprocess.run([sys.executable, "-m", "example_project.demo"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    rows = {line.split()[0]: line.split() for line in lines if line.startswith("digits_")}
    assert set(rows) == {"digits_raw", "digits_split/partition=train", "digits_split/partition=test",
                         "digits_features/partition=train", "digits_features/partition=test"}
    assert rows["digits_raw"][1] == "1797"
    assert int(rows["digits_split/partition=train"][1]) + int(rows["digits_split/partition=test"][1]) == 1797
    assert all(r[-1].startswith("bafyrei") for r in rows.values())
    assert any("digits_features/partition=test" in line and "<- digits_split[test]" in line for line in lines)
    trained = [line for line in lines if "digits_classifier (model)" in line]
    assert len(trained) == 1 and rows["digits_features/partition=train"][-1][:20] in trained[0]
    assert float(trained[0].rsplit(" ", 1)[-1]) > 0.8  # a linear model on digits scores ~0.9
    # a short summary: every asset's checks ran (digits_raw's too), Dagster's DEBUG log went to a file
    assert "  digits_raw" in out.stdout and "checks 3/3 passed" in out.stdout
    assert out.stdout.count("checks 6/6 passed") == 2
    assert "DEBUG" not in out.stdout + out.stderr and len(lines) < 40
    assert "STEP_SUCCESS" in (tmp_path / "demo.log").read_text()

    from atdata_dagster import local

    idx = local.Index(path=str(tmp_path / "index.db"), atmosphere=None)
    feats = idx.get_dataset("digits_features/partition=train")
    assert feats.metadata["promote"] is True
    assert feats.metadata["lineage"]["upstream"][0]["cid"] == idx.get_dataset("digits_split/partition=train").cid
    assert set(idx.verify(feats).values()) == {"ok"}
    sample = next(iter(idx.dataset_for_entry(feats).ordered()))
    assert sample.features.shape == (64,) and 0.0 <= float(sample.features.max()) <= 1.0
    assert (tmp_path / "models" / "digits_classifier.pkl").stat().st_size > 0


def test_the_example_is_one_asset_group_and_its_checksum_checks_block_downstream():
    from example_project import definitions as ex

    groups = {spec.group_name for a in ex.all_assets + [ex.digits_classifier] for spec in a.specs}
    assert groups == {"digits"}
    blocking = {spec.name: spec.blocking for c in ex.checks for spec in c.check_specs}
    assert blocking["atdata_checksums"] is True
    assert blocking["atdata_sample_count"] is False and blocking["atdata_schema"] is False
