"""load_dataset, Hugging Face style, with atdata 0.7's answers.

Without ``split``: a DatasetDict of every split found (names detected from file and
folder names); with ``split``: that split's Dataset. Files, globs, brace patterns,
directories, ``data_files=``, ``streaming=``, lists, and index references (name,
``@local/name``, ``@repo/name@version``). Errors keep our types and are also what atdata
raises: FileNotFoundError for no shards, ValueError for an unknown split.
"""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from atdata_dagster import Dataset, DatasetDict, DictSample, get_default_index, load_dataset, local, packable
from atdata_dagster import set_default_index, write_samples
from atdata_dagster.errors import DataFilesNotFoundError, NotFoundError, UnknownSplitError
from atdata_dagster.loading import detect_split


@packable
class Digit:
    image: NDArray[np.uint8]
    label: int


def _digits(n: int, start: int = 0):
    return [Digit(image=np.full((2, 3), i, np.uint8), label=i) for i in range(start, start + n)]


def _labels(ds) -> list[int]:
    return [int(s.label) for s in ds.ordered()]


@pytest.fixture
def splits_dir(tmp_path):
    """train-000000..1 (4 + 1), test-000000 (3), validation in a folder (2), and a README."""
    write_samples(_digits(5), tmp_path / "train.tar", maxcount=4)  # train-000000.tar, train-000001.tar
    write_samples(_digits(3, 100), tmp_path / "test-000000.tar")
    (tmp_path / "val").mkdir()
    write_samples(_digits(2, 200), tmp_path / "val" / "part-000000.tar")
    (tmp_path / "README.md").write_text("not a shard")
    return tmp_path


# ------------------------------------------------------------------ DatasetDict and splits


def test_without_a_split_a_directory_gives_a_datasetdict_of_every_split(splits_dir):
    dd = load_dataset(str(splits_dir), Digit)
    assert isinstance(dd, DatasetDict) and isinstance(dd, dict)
    assert sorted(dd) == ["test", "train", "validation"]
    assert dd.num_shards == {"train": 2, "test": 1, "validation": 1}
    assert _labels(dd["train"]) == list(range(5))
    assert _labels(dd["test"]) == [100, 101, 102]
    assert _labels(dd["validation"]) == [200, 201]
    assert dd.sample_type is Digit and dd.streaming is False


def test_with_a_split_the_one_dataset_is_returned(splits_dir):
    test = load_dataset(str(splits_dir), Digit, split="test")
    assert type(test) is Dataset[Digit] and _labels(test) == [100, 101, 102]


def test_a_glob_selects_files_and_their_split(splits_dir):
    train = load_dataset(str(splits_dir / "train-*.tar"), Digit, split="train")
    assert _labels(train) == list(range(5))
    assert sorted(load_dataset(str(splits_dir / "*.tar"), Digit)) == ["test", "train"]


def test_an_unknown_split_is_a_value_error_naming_the_splits_there(splits_dir):
    with pytest.raises(ValueError, match=r"Split 'dev' not found. Available splits: \[") as err:
        load_dataset(str(splits_dir), Digit, split="dev")
    assert isinstance(err.value, UnknownSplitError) and isinstance(err.value, NotFoundError)


def test_no_shards_is_a_file_not_found_error(tmp_path):
    (tmp_path / "empty").mkdir()
    for where in (tmp_path / "empty", tmp_path / "empty" / "*.tar"):
        with pytest.raises(FileNotFoundError, match="No data files found") as err:
            load_dataset(str(where))
        assert isinstance(err.value, DataFilesNotFoundError)


def test_a_missing_single_file_fails_when_read_with_file_not_found(tmp_path):
    ds = load_dataset(str(tmp_path / "nope.tar"), Digit, split="train")  # lazy, as in atdata
    with pytest.raises(FileNotFoundError):
        list(ds)


def test_a_single_split_datasetdict_forwards_dataset_methods_and_a_multi_split_one_says_pick(splits_dir):
    dd = load_dataset(str(splits_dir / "test-*.tar"), Digit)
    assert list(dd) == ["test"]
    assert [s.label for s in dd.head(2)] == [100, 101] and len(dd.list_shards()) == 1
    assert _labels(dd) == [100, 101, 102]
    with pytest.raises(AttributeError, match=r"3 splits .* select one first, e.g. ds\['"):
        load_dataset(str(splits_dir), Digit).ordered
    with pytest.raises(AttributeError):
        load_dataset(str(splits_dir), Digit).no_such_method


def test_split_names_are_detected_as_atdata_detects_them():
    assert detect_split("data/mnist-train-000.tar") == "train"
    assert detect_split("training_0.tar") == "train"
    assert detect_split("/d/x/test/part-0.tar") == "test"
    assert detect_split("valid-3.tar") == detect_split("dev/x.tar") == "validation"
    assert detect_split("/d/trainer/shard.tar") is None  # only delimited words count
    assert detect_split("part-000.tar") is None


def test_without_a_sample_type_files_decode_as_dictsample_and_as_type_converts(splits_dir):
    ds = load_dataset(str(splits_dir / "test-000000.tar"), split="test")
    first = next(iter(ds))
    assert isinstance(first, DictSample) and first["label"] == 100
    assert [s.label for s in ds.as_type(Digit).ordered()] == [100, 101, 102]


# ------------------------------------------------------------------ data_files, streaming, brace patterns


def test_data_files_map_splits_to_patterns_relative_to_the_path(splits_dir):
    dd = load_dataset(str(splits_dir), Digit, data_files={"train": "train-*.tar", "holdout": ["test-000000.tar"]})
    assert sorted(dd) == ["holdout", "train"]
    assert _labels(dd["holdout"]) == [100, 101, 102] and len(dd["train"].list_shards()) == 2
    one = load_dataset(str(splits_dir), Digit, data_files=["val/part-000000.tar"], split="train")
    assert _labels(one) == [200, 201]


def test_streaming_is_accepted_and_recorded(splits_dir):
    dd = load_dataset(str(splits_dir), Digit, streaming=True)
    assert dd.streaming is True
    assert _labels(load_dataset(str(splits_dir), Digit, split="train", streaming=True)) == list(range(5))


def test_a_brace_pattern_is_kept_as_written(tmp_path):
    ds = write_samples(_digits(6), tmp_path / "shard.tar", maxcount=2)
    pattern = str(tmp_path / "shard-{000000..000002}.tar")
    got = load_dataset(pattern, Digit, split="train")
    assert got.url == pattern and got.list_shards() == ds.list_shards()
    assert _labels(got) == list(range(6))


# ------------------------------------------------------------------ index references


@pytest.fixture
def index(tmp_path):
    with local.Index(path=str(tmp_path / "i.db"), data_store=local.LocalDiskStore(str(tmp_path / "data")),
                     atmosphere=None) as idx:
        yield idx


def test_an_index_name_resolves_through_the_index_with_its_recorded_type(index):
    entry = index.write_samples(_digits(4), name="digits")
    dd = load_dataset("digits", index=index)
    assert list(dd) == ["train"]
    ds = load_dataset("@local/digits", index=index, split="train")
    assert ds.cid == entry.cid and ds.sample_type.__name__ == "Digit" and _labels(ds) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="Split 'test' not found"):
        load_dataset("digits", index=index, split="test")
    with pytest.raises(KeyError):
        load_dataset("@local/nothing", index=index)


def test_a_versioned_reference_resolves_the_label_version(index):
    v1 = index.write_samples(_digits(2), name="digits")
    index.label("digits", v1.cid, version="1.0.0")
    index.write_samples(_digits(3, 50), name="digits")
    assert _labels(load_dataset("@local/digits@1.0.0", Digit, index=index, split="train")) == [0, 1]
    assert _labels(load_dataset("@local/digits", Digit, index=index, split="train")) == [50, 51, 52]


def test_the_default_index_is_used_and_can_be_replaced(index):
    import atdata_dagster.loading as loading

    index.write_samples(_digits(2), name="by-default")
    before = loading._default_index  # not get_default_index(): that would open ~/.atdata here
    set_default_index(index)
    try:
        assert get_default_index() is index
        assert _labels(load_dataset("by-default", Digit, split="train")) == [0, 1]
    finally:
        set_default_index(before)
