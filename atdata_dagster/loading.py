"""``load_dataset``: open a dataset from a location or an index reference.

Above ``index`` in the layering: a reference that is not a location resolves through an
:class:`~atdata_dagster.index.index.Index` (by default a new ``Index()``).
"""

from __future__ import annotations

import os
from typing import Any

from .dataset import Dataset
from .errors import NotFoundError
from .index.index import Index

__all__ = ["load_dataset"]


# ------------------------------------------------------------------ load_dataset

_INDEX_PREFIXES = ("at://", "@", "atdata://")


def _is_location(ref: Any) -> bool:
    if isinstance(ref, (os.PathLike, list, tuple)):
        return True
    if not isinstance(ref, str) or ref.startswith(_INDEX_PREFIXES):
        return False
    if "://" in ref or ref.startswith(("/", "./", "../", "~")):
        return True
    if ref.endswith(".tar") or (".tar" in ref and "{" in ref):
        return True
    return os.path.exists(ref)


def _local_shards(ref: str, split: str | None) -> list[str] | str:
    path = os.path.expanduser(ref)
    if "://" in ref or "{" in ref or not os.path.isdir(path):
        if split not in (None, "train"):
            raise NotFoundError(f"{ref!r} is a single set of shards; it has no split {split!r}")
        return os.path.abspath(path) if "://" not in ref and "{" not in ref else ref
    root = os.path.abspath(path)
    if split is not None and os.path.isdir(os.path.join(root, split)):
        root = os.path.join(root, split)
        names = sorted(n for n in os.listdir(root) if n.endswith(".tar"))
    else:
        names = sorted(n for n in os.listdir(root) if n.endswith(".tar"))
        if split is not None:
            names = [n for n in names if n.startswith(split)]
    if not names:
        where = f" for split {split!r}" if split else ""
        raise NotFoundError(f"no .tar shards in directory {root}{where}")
    return [os.path.join(root, n) for n in names]


def load_dataset(
    ref: Any,
    sample_type: type | None = None,
    *,
    index: Any = None,
    split: str | None = None,
) -> Dataset:
    """Open a dataset lazily from a location or an index name.

    A local path, ``file://``/``s3://``/``http(s)://`` URL, brace pattern or list of
    URLs is opened directly (a directory: its ``*.tar`` files, sorted; ``split``
    selects a subdirectory or the files whose name starts with it). Anything else is
    resolved through ``index`` (default: a new ``local.Index()``): its entry's
    shards, decoded with ``sample_type`` or the entry's schema. Index entries have a
    single split; ``split`` may be ``None`` or ``"train"``.
    """
    if _is_location(ref):
        urls = _local_shards(os.fspath(ref), split) if isinstance(ref, (str, os.PathLike)) else list(ref)
        cls = Dataset[sample_type] if sample_type is not None else Dataset  # type: ignore[valid-type]
        return cls(urls)
    if split not in (None, "train"):
        raise NotFoundError(
            f"dataset {ref!r}: index entries have a single split ('train'), not {split!r}; "
            "store each split as its own dataset name (e.g. 'mnist/test')"
        )
    if index is None:
        index = Index()
    entry = index.get_dataset(ref)
    cls_t = sample_type or index.decode_schema(entry.schema_ref)
    shard_opener = getattr(index, "shard_opener", None)
    opener = shard_opener(entry) if shard_opener is not None else getattr(index, "open_url", None)
    return Dataset[cls_t](  # type: ignore[valid-type]
        list(entry.data_urls), metadata=entry.metadata, opener=opener, cid=entry.cid
    )
