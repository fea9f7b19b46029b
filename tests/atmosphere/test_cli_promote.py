"""``atdata-dagster promote`` against a real PDS: the upload reports its progress in bytes."""

from __future__ import annotations

import io
import json

import numpy as np
from numpy.typing import NDArray

from atdata_dagster import cli, local, packable


@packable
class Tile:
    label: int
    pixels: NDArray[np.uint8]


def test_promote_uploads_with_byte_progress_and_prints_the_at_uri(tmp_path, pds, pds_account, monkeypatch, capsys):
    idx = local.Index(path=str(tmp_path / "index.db"), data_store=local.LocalDiskStore(tmp_path / "data"), atmosphere=None)
    rng = np.random.default_rng(0)
    entry = idx.write_samples([Tile(label=i, pixels=rng.integers(0, 255, 4096, np.uint8)) for i in range(40)], name="tiles",
                      maxcount=20)
    idx.close()
    monkeypatch.setenv("ATDATA_APP_PASSWORD", pds_account["password"])
    monkeypatch.setattr(cli, "PLAIN_PROGRESS_EVERY", 0.0)
    out = io.StringIO()
    code = cli.main(["--index", f"sqlite:///{tmp_path / 'index.db'}", "promote", "tiles",
                     "--handle", pds_account["handle"], "--service", pds["url"]], out=out)
    assert code == 0 and out.getvalue().startswith(f"tiles -> at://{pds_account['did']}/")
    lines = capsys.readouterr().err.splitlines()
    total = cli.human_bytes(entry.stats["total_bytes"])
    assert lines and all(line.startswith("upload: ") for line in lines)
    assert lines[-1] == f"upload: {total}/{total} (100%)"

    out = io.StringIO()  # promoting again reuses the records: nothing is uploaded, no progress is printed
    code = cli.main(["--json", "--index", f"sqlite:///{tmp_path / 'index.db'}", "promote", "tiles",
                     "--handle", pds_account["handle"], "--service", pds["url"]], out=out)
    assert code == 0 and json.loads(out.getvalue())["uri"].startswith(f"at://{pds_account['did']}/")
    assert capsys.readouterr().err == ""
