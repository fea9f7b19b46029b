"""The shard cache: verified on entry, content-addressed, least recently used evicted past its byte limit.

Remote behaviour (no second download from the real RGW) is in tests/test_loader_torch.py.
"""

from __future__ import annotations

import hashlib
import os
import time

import pytest

from atdata_dagster.errors import ChecksumMismatchError, ConfigurationError
from atdata_dagster.shards.cache import ShardCache


def _source(tmp_path, name: str, size: int) -> tuple[str, str]:
    path = tmp_path / "src" / name
    path.parent.mkdir(exist_ok=True)
    data = os.urandom(size)
    path.write_bytes(data)
    return str(path), hashlib.sha256(data).hexdigest()


def test_a_miss_downloads_verifies_and_a_hit_does_not_open_the_source(tmp_path):
    url, sha = _source(tmp_path, "a.tar", 5000)
    opened = []

    def open_fn(u):
        opened.append(u)
        return open(u, "rb")

    cache = ShardCache(tmp_path / "c")
    path = cache.fetch(url, sha, open_fn)
    assert open(path, "rb").read() == open(url, "rb").read() and os.path.basename(path) == f"{sha}.tar"
    assert cache.fetch(url, sha, open_fn) == path
    assert opened == [url] and (cache.hits, cache.misses) == (1, 1)


def test_a_corrupt_download_never_enters_the_cache(tmp_path):
    url, sha = _source(tmp_path, "a.tar", 5000)
    cache = ShardCache(tmp_path / "c")
    with pytest.raises(ChecksumMismatchError, match="a.tar"):
        cache.fetch(url, "0" * 64, lambda u: open(u, "rb"))
    assert os.listdir(tmp_path / "c") == []
    assert cache.fetch(url, sha, lambda u: open(u, "rb"))


def test_the_least_recently_used_shards_are_evicted_past_the_limit(tmp_path):
    cache = ShardCache(tmp_path / "c", limit_bytes=2500)
    shards = [_source(tmp_path, f"{i}.tar", 1000) for i in range(3)]
    a = cache.fetch(*shards[0], lambda u: open(u, "rb"))
    time.sleep(0.01)
    b = cache.fetch(*shards[1], lambda u: open(u, "rb"))
    time.sleep(0.01)
    cache.fetch(*shards[0], lambda u: open(u, "rb"))  # a is now more recent than b
    time.sleep(0.01)
    c = cache.fetch(*shards[2], lambda u: open(u, "rb"))
    assert os.path.exists(a) and os.path.exists(c) and not os.path.exists(b)
    assert cache.size_bytes() <= 2500


def test_a_bad_limit_is_a_configuration_error(tmp_path):
    with pytest.raises(ConfigurationError, match="cache_limit_bytes"):
        ShardCache(tmp_path, limit_bytes=0)
