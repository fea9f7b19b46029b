"""The dataset naming rule: asset key (+ partition) -> name, and back."""

import hashlib

import dagster as dg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atdata_dagster.errors import InvalidNameError
from atdata_dagster.index.names import validate_dataset_name
from atdata_dagster.naming import (
    HASHED_PARTITION_MARK,
    dataset_name,
    escape_segment,
    parse_dataset_name,
    unescape_segment,
)


def test_plain_asset_key_is_the_path_joined_with_slashes():
    assert dataset_name(dg.AssetKey(["mnist", "train"])) == "mnist/train"
    assert dataset_name(dg.AssetKey(["digits"]), "2024-01-01") == "digits/partition=2024-01-01"


@pytest.mark.parametrize(
    "partition",
    ["a/b", "..", ".", "../../etc/passwd", "x\x00y", "tab\there", "日本語", "", ".tmp-x", "a=b", "~", "%41", "\\", "a|b"],
)
def test_hostile_partition_keys_give_valid_names_that_round_trip(partition):
    key = dg.AssetKey(["raw", "events"])
    name = dataset_name(key, partition)
    validate_dataset_name(name)  # raises if unsafe
    assert name.startswith("raw/events/partition=")
    assert name.count("/") == 2  # the key cannot add segments
    assert parse_dataset_name(name) == (key, partition, None)


def test_unescaped_names_differ_for_keys_that_would_collide_naively():
    # ["a", "b"] unpartitioned vs ["a"] partition "b" vs ["a/b"]
    names = {
        dataset_name(dg.AssetKey(["a", "b"])),
        dataset_name(dg.AssetKey(["a"]), "b"),
        dataset_name(dg.AssetKey(["a/b"])),
        dataset_name(dg.AssetKey(["a", "partition=b"])),
    }
    assert len(names) == 4


def test_very_long_partition_key_is_hashed_deterministically():
    key = dg.AssetKey(["x"])
    long_key = "k" * 5000
    name = dataset_name(key, long_key)
    assert name == dataset_name(key, long_key)
    assert name != dataset_name(key, long_key + "!")
    assert HASHED_PARTITION_MARK in name and len(name) < 120
    validate_dataset_name(name)
    parts = parse_dataset_name(name)
    assert parts.asset_key == key and parts.partition_key is None
    assert parts.partition_sha256 == hashlib.sha256(long_key.encode()).hexdigest()


def test_base_name_override_keeps_the_partition_segment():
    assert dataset_name(dg.AssetKey(["x"]), "p/1", base="team/mnist") == "team/mnist/partition=p%2F1"
    with pytest.raises(InvalidNameError):
        dataset_name(dg.AssetKey(["x"]), base="../escape")


def test_malformed_escaped_segment_is_rejected():
    with pytest.raises(InvalidNameError):
        unescape_segment("%G1")
    with pytest.raises(InvalidNameError):
        unescape_segment("a b")


@settings(max_examples=300, deadline=None)
@given(
    key=st.lists(st.text(min_size=0, max_size=10), min_size=1, max_size=3),
    partition=st.one_of(st.none(), st.text(max_size=300)),
)
def test_any_key_and_partition_round_trip(key, partition):
    asset_key = dg.AssetKey(key)
    name = dataset_name(asset_key, partition)
    validate_dataset_name(name)
    parts = parse_dataset_name(name)
    assert parts.asset_key == asset_key
    if parts.partition_sha256 is None:
        assert parts.partition_key == partition
    else:  # too long to spell out: the digest identifies it
        assert parts.partition_key is None
        assert parts.partition_sha256 == hashlib.sha256(partition.encode()).hexdigest()


def test_an_overlong_asset_key_asks_for_atdata_name():
    with pytest.raises(InvalidNameError, match="atdata/name"):
        dataset_name(dg.AssetKey(["x" * 200] * 3))


@given(st.text(max_size=80))
def test_escape_segment_round_trips_and_is_safe(text):
    seg = escape_segment(text)
    assert "/" not in seg and "\x00" not in seg and seg not in (".", "..")
    assert not seg.startswith(".")
    assert unescape_segment(seg) == text
