"""The ``atdata-dagster`` command line: list, show, verify, gc (promote is covered with a PDS)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from atdata_dagster import local, packable
from atdata_dagster.cli import main


@packable
class Item:
    label: int
    x: NDArray[np.float32]


@pytest.fixture
def setup(tmp_path: Path):
    idx = local.Index(path=str(tmp_path / "index.db"), data_store=local.LocalDiskStore(tmp_path / "data"), atmosphere=None)
    entry = idx.write_samples([Item(label=i, x=np.ones(3, np.float32)) for i in range(30)], name="items", maxcount=10,
                      metadata={"lineage": {"asset_key": ["items"], "run_id": "r1", "upstream": []}})
    idx.close()
    args = ["--index", f"sqlite:///{tmp_path / 'index.db'}", "--data-root", str(tmp_path / "data")]
    return args, entry, tmp_path


def run(args: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    code = main(args, out=out)
    return code, out.getvalue()


def test_list_prints_a_table_and_json(setup):
    args, entry, _ = setup
    code, text = run(args + ["list"])
    assert code == 0 and "items" in text and entry.cid in text and "30" in text
    code, text = run(args + ["--json", "list"])
    rows = json.loads(text)
    assert rows[0]["name"] == "items" and rows[0]["samples"] == 30 and rows[0]["shards"] == 3


def test_global_options_work_after_the_verb_as_well(setup):
    args, entry, _ = setup
    code, text = run(["list"] + args + ["--json"])
    assert code == 0 and json.loads(text)[0]["cid"] == entry.cid
    code, text = run(["show", "items", "--json"] + args)
    assert code == 0 and json.loads(text)["cid"] == entry.cid


def test_version_is_printed(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("atdata-dagster ")


def test_every_argument_has_a_help_text():
    from atdata_dagster.cli import build_parser

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # argparse keeps subcommands only here
    for name, sub in commands.items():
        for action in sub._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} has no help text"


def test_show_and_verify_accept_a_cid(setup):
    args, entry, _ = setup
    code, text = run(args + ["show", entry.cid])
    assert code == 0 and text.startswith(f"items  ({entry.cid})")
    code, text = run(args + ["verify", entry.cid])
    assert code == 0 and "items: OK" in text


def test_verify_reports_progress_in_bytes_as_plain_lines_when_not_on_a_terminal(setup, capsys, monkeypatch):
    from atdata_dagster import cli

    args, entry, _ = setup
    monkeypatch.setattr(cli, "PLAIN_PROGRESS_EVERY", 0.0)
    code, _ = run(args + ["verify", "items"])
    lines = capsys.readouterr().err.splitlines()
    total = cli.human_bytes(entry.stats["total_bytes"])
    assert code == 0 and len(lines) == 3  # one line per shard: a log gets lines, never carriage returns
    assert lines[-1] == f"verify: {total}/{total} (100%)" and "KiB/" in lines[0]


def test_short_work_prints_no_progress_off_a_terminal_and_none_at_all_with_json(setup, capsys):
    args, _, _ = setup
    assert run(args + ["verify", "items"])[0] == 0
    assert capsys.readouterr().err == ""  # done well within PLAIN_PROGRESS_EVERY
    assert run(args + ["--json", "verify", "items"])[0] == 0
    assert capsys.readouterr().err == ""


def test_the_progress_bar_on_a_terminal_redraws_one_line_and_ends_it(capsys):
    from atdata_dagster.cli import _Progress

    bar = _Progress(3 << 20, "upload", unit="bytes", tty=True)
    for _ in range(3):
        bar.step(1 << 20)
    err = capsys.readouterr().err
    assert err.startswith("\rupload [") and err.endswith("] 3.0 MiB/3.0 MiB\n") and err.count("\n") == 1


def test_repair_restores_a_corrupted_shard_from_the_rematerialized_copy_and_says_so(setup):
    args, old, tmp_path = setup
    shard = Path(old.data_urls[0])
    good = shard.read_bytes()
    shard.write_bytes(good[:600] + b"\xff" * 8 + good[608:])
    idx = local.Index(path=str(tmp_path / "index.db"), data_store=local.LocalDiskStore(tmp_path / "data"), atmosphere=None)
    new = idx.write_samples([Item(label=i, x=np.ones(3, np.float32)) for i in range(30)], name="items", maxcount=10)
    idx.close()
    code, text = run(args + ["verify", old.cid])
    assert code == 1 and "1 bad shard" in text
    code, text = run(args + ["repair", old.cid, "--dry-run"])
    assert code == 0 and f"would restore {shard} (mismatch) from {new.data_urls[0]}" in text
    assert shard.read_bytes() != good
    code, text = run(args + ["repair", old.cid])
    assert code == 0 and f"restored {shard} (mismatch) from {new.data_urls[0]}" in text
    assert "1 of 1 damaged shard(s) restored" in text and shard.read_bytes() == good
    code, text = run(args + ["--json", "repair", old.cid])
    assert code == 0 and json.loads(text) == {"name": "items", "cid": old.cid, "ok": True, "dry_run": False, "shards": []}


def test_repair_without_a_copy_exits_1_and_says_which_asset_to_rematerialize(setup):
    args, entry, _ = setup
    Path(entry.data_urls[2]).unlink()
    code, text = run(args + ["repair", "items"])
    assert code == 1 and f"still missing: {entry.data_urls[2]}" in text
    assert "re-materialize asset 'items'" in text and "0 of 1 damaged shard(s) restored" in text


@pytest.mark.parametrize("command", [["list"], ["show", "items"], ["verify", "items"], ["repair", "items"]])
def test_commands_refuse_an_index_file_that_does_not_exist_without_creating_it(tmp_path, command, capsys):
    missing = tmp_path / "typo.db"
    code, _ = run(["--index", f"sqlite:///{missing}", *command])
    assert code == 2 and "no index at" in capsys.readouterr().err
    assert not missing.exists()


def test_show_prints_schema_shards_and_lineage(setup):
    args, entry, _ = setup
    code, text = run(args + ["show", "items"])
    assert code == 0
    assert "label: int" in text and "x: ndarray[float32]" in text
    assert entry.data_urls[2] in text and "run_id" in text
    doc = json.loads(run(args + ["--json", "show", "items"])[1])
    assert doc["lineage"]["run_id"] == "r1" and doc["checksums"] == entry.checksums


def test_verify_passes_on_good_data_and_catches_a_tampered_shard(setup):
    args, entry, _ = setup
    assert run(args + ["verify", "items"])[0] == 0
    with open(entry.data_urls[0], "r+b") as f:
        f.seek(700)
        f.write(b"\xff")
    code, text = run(args + ["--json", "verify", "items"])
    doc = json.loads(text)
    assert code == 1 and not doc["ok"] and doc["shards"][entry.data_urls[0]] == "mismatch"


def test_gc_never_deletes_referenced_shards_and_removes_orphans(setup):
    args, entry, tmp_path = setup
    orphan = tmp_path / "data" / "items" / "data--deadbeef--000009.tar"
    orphan.write_bytes(b"\0" * 1024)
    leftover = tmp_path / "data" / "items" / (".tmp-" + "a" * 32 + ".tar.part")
    leftover.write_bytes(b"partial")
    fresh = tmp_path / "data" / "items" / "data--0badf00d--000010.tar"
    fresh.write_bytes(b"\0" * 1024)
    old = 1_000_000_000
    os.utime(orphan, (old, old))
    os.utime(leftover, (old, old))
    code, text = run(args + ["--json", "gc", "--dry-run"])
    assert code == 0 and sorted(json.loads(text)["would_delete"]) == sorted([str(orphan), str(leftover)])
    assert orphan.exists()
    code, text = run(args + ["gc"])
    assert code == 0 and "kept 1 unreferenced object(s) younger than --grace 3600s" in text
    assert not orphan.exists() and not leftover.exists()
    assert fresh.exists()  # younger than the grace period: may belong to a running write
    assert all(Path(u).exists() for u in entry.data_urls)


def test_gc_removes_sidecars_whose_shard_is_gone_and_keeps_those_of_referenced_shards(setup):
    args, entry, tmp_path = setup
    kept = [Path(entry.data_urls[0][:-4] + ".manifest.json")]
    for side in kept:
        side.write_text("{}")
    stray = tmp_path / "data" / "items" / "data--feedface--000003.manifest.json"  # its shard never came
    stray.write_text("{}")
    young = tmp_path / "data" / "items" / "data--c0ffee00--000004.manifest.json"
    young.write_text("{}")
    old = 1_000_000_000
    for p in kept + [stray]:
        os.utime(p, (old, old))
    code, text = run(args + ["--json", "gc"])
    assert code == 0 and json.loads(text)["deleted"] == [str(stray)]
    assert not stray.exists() and young.exists() and all(p.exists() for p in kept)


def test_gc_refuses_a_root_the_index_never_wrote_to_unless_forced(setup, capsys):
    args, entry, tmp_path = setup
    foreign = tmp_path / "elsewhere" / "theirs" / "data--deadbeef--000001.tar"
    foreign.parent.mkdir(parents=True)
    foreign.write_bytes(b"\0" * 1024)
    index_args = args[:2] + ["--data-root", str(tmp_path / "elsewhere")]
    code, text = run(index_args + ["gc", "--grace", "0"])
    err = capsys.readouterr().err
    assert code == 2 and text == "" and "no ownership marker" in err and "--force" in err
    assert foreign.exists()
    code, text = run(index_args + ["--json", "gc", "--grace", "0", "--force"])
    assert code == 0 and json.loads(text)["deleted"] == [str(foreign)] and not foreign.exists()


def test_gc_refuses_a_sqlite_index_that_does_not_exist_without_creating_it(setup, capsys):
    args, entry, tmp_path = setup
    code, _ = run(["--index", f"sqlite:///{tmp_path / 'typo.db'}", args[2], args[3], "gc"])
    assert code == 2 and "does not exist" in capsys.readouterr().err and not (tmp_path / "typo.db").exists()
    assert all(Path(u).exists() for u in entry.data_urls)


def test_errors_are_reported_without_a_traceback(setup):
    args, _, _ = setup
    err = subprocess.run([sys.executable, "-m", "atdata_dagster.cli", *args, "show", "missing"],
                         capture_output=True, text=True)
    assert err.returncode == 2 and err.stderr.startswith("error:") and "Traceback" not in err.stderr


def test_console_script_is_installed():
    exe = Path(sys.executable).parent / "atdata-dagster"
    assert exe.exists()
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "verify" in out.stdout


def test_every_command_closes_the_index_it_opened(setup, monkeypatch):
    from atdata_dagster.index.index import Index

    args, _, _ = setup
    closed = []
    real_close = Index.close
    monkeypatch.setattr(Index, "close", lambda self: (closed.append(self), real_close(self))[1])
    for command in (["list"], ["show", "items"], ["verify", "items"], ["gc", "--dry-run"], ["show", "missing"]):
        before = len(closed)
        run(args + command)
        assert len(closed) == before + 1, command


@pytest.mark.s3
@pytest.mark.xdist_group("s3")
def test_verify_and_gc_work_on_an_s3_store_named_by_url(tmp_path, rgw_server, s3_bucket, s3_client, monkeypatch):
    from atdata_dagster.stores.s3 import S3DataStore

    store = S3DataStore(bucket=s3_bucket, prefix="team", **rgw_server.config)
    idx = local.Index(path=str(tmp_path / "index.db"), data_store=store, atmosphere=None)
    entry = idx.write_samples([Item(label=i, x=np.ones(3, np.float32)) for i in range(20)], name="items", maxcount=10)
    idx.close()
    s3_client.put_object(Bucket=s3_bucket, Key="team/items/data--deadbeef--000009.tar", Body=b"\0" * 1024)
    # credentials and endpoint from the environment only, as the help text says
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", rgw_server.config["aws_access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", rgw_server.config["aws_secret_access_key"])
    monkeypatch.setenv("AWS_ENDPOINT_URL", rgw_server.endpoint_url)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    args = ["--index", f"sqlite:///{tmp_path / 'index.db'}", "--store", f"s3://{s3_bucket}/team"]
    code, text = run(args + ["--json", "verify", "items"])
    doc = json.loads(text)
    assert code == 0 and doc["ok"] and doc["shards"] == {u: "ok" for u in entry.data_urls}
    code, text = run(args + ["--json", "gc", "--grace", "0"])
    assert code == 0 and json.loads(text)["deleted"] == [f"s3://{s3_bucket}/team/items/data--deadbeef--000009.tar"]
    left = {o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_bucket).get("Contents", [])}
    assert {u.split("/", 3)[3] for u in entry.data_urls} <= left
    assert "team/items/data--deadbeef--000009.tar" not in left


def test_list_and_show_say_which_version_is_current(setup):
    args, old, tmp_path = setup
    idx = local.Index(path=str(tmp_path / "index.db"), data_store=local.LocalDiskStore(tmp_path / "data"), atmosphere=None)
    new = idx.write_samples([Item(label=i, x=np.zeros(3, np.float32)) for i in range(5)], name="items")
    idx.close()
    rows = json.loads(run(args + ["--json", "list"])[1])
    assert {r["cid"]: r["current"] for r in rows} == {old.cid: False, new.cid: True}
    code, text = run(args + ["list"])
    marked = [line for line in text.splitlines() if line.startswith("* items")]
    assert len(marked) == 1 and new.cid in marked[0] and "* = current" in text
    code, text = run(args + ["show", old.cid])
    assert code == 0 and f"current   no: 'items' resolves to {new.cid}" in text
    assert json.loads(run(args + ["--json", "show", "items"])[1])["current"] is True
