"""Per-sample offsets: header-only scans, manifest sidecars, and reading one sample by its range."""

from __future__ import annotations

import io
import tarfile

import pytest

from atdata_dagster.errors import ShardError
from atdata_dagster.samples.packable import DictSample
from atdata_dagster.shards.offsets import iter_range, offsets_from_manifest, read_sample_bytes, sample_at, scan_offsets
from atdata_dagster.shards.reader import iter_samples
from atdata_dagster.dataset import write_samples


class CountingFile(io.FileIO):
    """A real file that counts the bytes read through it."""

    read_bytes = 0

    def read(self, n=-1):
        data = super().read(n)
        self.read_bytes += len(data)
        return data


def _shard(tmp_path, n=20, size=10_000, manifest=False):
    samples = [DictSample(i=i, blob=bytes([i]) * size) for i in range(n)]
    return write_samples(samples, tmp_path / "s.tar", manifest=manifest).list_shards()[0]


def test_scan_reads_headers_only_and_finds_every_sample(tmp_path):
    path = _shard(tmp_path)
    with CountingFile(path) as f:
        offsets = scan_offsets(f, path)
        assert f.read_bytes < 20 * 512 + 1024  # one header per sample and the end marker, no payloads
    with open(path, "rb") as f:
        keys = [k for k, _ in iter_samples(f, path)]
    assert list(offsets.keys) == keys and len(offsets) == 20
    with open(path, "rb") as f:
        for i, key in enumerate(keys):
            k, payload = sample_at(read_sample_bytes(f, offsets, i), path, key)
            assert DictSample.from_bytes(payload).i == i


def test_manifest_offsets_agree_with_the_scan(tmp_path):
    path = _shard(tmp_path, manifest=True)
    with open(path[:-4] + ".manifest.parquet", "rb") as f:
        from_manifest = offsets_from_manifest(f.read())
    with open(path, "rb") as f:
        scanned = scan_offsets(f, path)
    assert from_manifest is not None
    assert from_manifest.keys == scanned.keys and from_manifest.offsets == scanned.offsets


def test_scan_groups_pax_long_names_with_their_sample(tmp_path):
    path = tmp_path / "pax.tar"
    long = "k" * 120
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for key in ("a", long, "c"):
            data = DictSample(name=key).packed
            info = tarfile.TarInfo(f"{key}.msgpack")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    with open(path, "rb") as f:
        offsets = scan_offsets(f, str(path))
        assert offsets.keys == ("a", long, "c")
        k, payload = sample_at(read_sample_bytes(f, offsets, 1), str(path))
    assert k == long and DictSample.from_bytes(payload).name == long


def test_iter_range_seeks_to_the_first_sample(tmp_path):
    path = _shard(tmp_path)
    with open(path, "rb") as f:
        offsets = scan_offsets(f, path)
    with CountingFile(path) as f:
        got = [DictSample.from_bytes(p).i for _, p in iter_range(f, path, offsets, 15, 18)]
        assert f.read_bytes < 8 * 10_752  # it did not read samples 0..14
    assert got == [15, 16, 17]


def test_a_truncated_shard_fails_the_scan_and_a_short_range_is_reported(tmp_path):
    path = _shard(tmp_path, n=3)
    with open(path, "rb") as f:
        data = f.read()
    with pytest.raises(ShardError, match="truncated"):
        scan_offsets(io.BytesIO(data[: len(data) - 1500]), path)
    with open(path, "rb") as f, pytest.raises(ShardError, match="fewer samples"):
        list(iter_range(f, path, None, 0, 5))
