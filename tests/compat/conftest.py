"""Fixtures for the atdata interoperability suite.

``atdata`` is a long-lived subprocess running ``atdata_side.py`` in the Python 3.12
venv that ``scripts/install-atdata-venv.sh`` builds (``.cache/atdata-venv``); requests
and answers are JSON lines. Without that venv the tests that need it skip, except
under ``CI=true`` where they fail, so CI can never pass by skipping the proof.

``provider_spec`` describes one fresh SQLite / PostgreSQL / Redis index location the
same way to both sides.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest

from . import wire

REPO = Path(__file__).resolve().parents[2]
ATDATA_VENV = Path(os.environ.get("ATDATA_VENV", REPO / ".cache" / "atdata-venv"))
ATDATA_PYTHON = ATDATA_VENV / "bin" / "python"
DRIVER = Path(__file__).resolve().parent / "atdata_side.py"
CALL_TIMEOUT = 120.0


def pytest_configure(config: pytest.Config) -> None:
    # registered by pytest-xdist too; repeated here so --strict-markers never trips
    config.addinivalue_line("markers", "xdist_group(name): run every test of the group on one xdist worker")
    config.addinivalue_line("markers", "atdata: drives the real atdata library (Python 3.12 venv)")


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def unavailable(reason: str) -> None:
    """Skip locally, fail under CI=true."""
    if _in_ci():
        pytest.fail(f"{reason} (CI=true: the compat suite must run, not skip)", pytrace=False)
    pytest.skip(reason)


class AtdataSideError(AssertionError):
    """atdata raised while serving a request; the message carries its traceback."""


class AtdataSide:
    """One ``atdata_side.py`` process; ``call(op, **kw)`` returns its decoded result."""

    def __init__(self, python: Path) -> None:
        self._log = tempfile.NamedTemporaryFile(prefix="atdata-side-", suffix=".log", delete=False)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
        self._home = tempfile.mkdtemp(prefix="atdata-home-")
        env["HOME"] = self._home  # atdata's ~/.atdata defaults stay out of the real home
        self.proc = subprocess.Popen(
            [str(python), "-u", str(DRIVER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env=env,
        )
        self.info = self.call("ping")

    def call(self, op: str, **kwargs: Any) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"atdata side exited ({self.proc.returncode}); log: {self.log_tail()}")
        self.proc.stdin.write(wire.dumps({"op": op, **kwargs}) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], CALL_TIMEOUT)
        if not ready:
            raise TimeoutError(f"atdata side gave no answer to {op!r} in {CALL_TIMEOUT}s; log: {self.log_tail()}")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"atdata side closed its output during {op!r}; log: {self.log_tail()}")
        answer = wire.from_json(json.loads(line))
        if not answer["ok"]:
            raise AtdataSideError(f"atdata failed on {op!r}: {answer['error']}\n{answer['traceback']}")
        return answer["result"]

    def log_tail(self, n: int = 4000) -> str:
        try:
            return Path(self._log.name).read_text(errors="replace")[-n:]
        except OSError:
            return "<no log>"

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()
        os.unlink(self._log.name)
        shutil.rmtree(self._home, ignore_errors=True)


@pytest.fixture(scope="session")
def atdata_python() -> Path:
    if not ATDATA_PYTHON.exists():
        unavailable(
            f"atdata venv missing ({ATDATA_PYTHON}); run `bash scripts/install-atdata-venv.sh` "
            "(needs Python 3.12) to enable the atdata interoperability tests"
        )
    return ATDATA_PYTHON


@pytest.fixture(scope="session")
def atdata(atdata_python: Path) -> Iterator[AtdataSide]:
    side = AtdataSide(atdata_python)
    assert side.info["atdata"] == "0.7.0b1", side.info
    yield side
    side.close()


# ------------------------------------------------------------------------ services


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
        pytest.param("redis", id="redis", marks=pytest.mark.redis),
    ]
)
def provider_spec(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """One fresh index location described for both sides: ``{"kind": ..., ...}``.

    PostgreSQL and Redis come from ``tests/fixtures/services.py`` (a new database per
    test; a leased, emptied Redis database).
    """
    kind = request.param
    if kind == "sqlite":
        return {"kind": "sqlite", "path": str(tmp_path / "index.db")}
    if kind == "postgres":
        return {"kind": "postgres", "dsn": request.getfixturevalue("postgres_dsn")}
    return {"kind": "redis", "url": request.getfixturevalue("redis_url")}


def open_our_index(spec: dict[str, Any], *, store_root: Path | None = None, **kwargs: Any):
    """Our ``Index`` on the location ``spec`` describes."""
    from atdata_dagster.local import Index, LocalDiskStore

    store = LocalDiskStore(str(store_root)) if store_root is not None else None
    if spec["kind"] == "sqlite":
        return Index(path=spec["path"], data_store=store, atmosphere=None, **kwargs)
    if spec["kind"] == "postgres":
        return Index(dsn=spec["dsn"], data_store=store, atmosphere=None, **kwargs)
    import redis

    return Index(redis=redis.Redis.from_url(spec["url"]), data_store=store, atmosphere=None, **kwargs)


_OUR_TYPES: dict[str, type] = {}


def our_type(name: str) -> type:
    """Our ``@packable`` class for ``wire.SPECS[name]`` (same name, fields, annotations as atdata's)."""
    if name not in _OUR_TYPES:
        from atdata_dagster.samples.packable import packable

        _OUR_TYPES[name] = wire.build_type(wire.SPECS[name], packable, module="compat_types")
    return _OUR_TYPES[name]


def fields_of(sample: Any, names: list[str]) -> dict[str, Any]:
    return {n: getattr(sample, n) for n in names}
