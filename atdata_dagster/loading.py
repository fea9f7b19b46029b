"""``load_dataset``, Hugging Face style: files, globs, directories, splits and index references.

Above ``index`` in the layering: a reference that is not a location resolves through an
:class:`~atdata_dagster.index.index.Index` (by default :func:`get_default_index`).

Behaves as atdata 0.7's ``load_dataset``: without ``split`` it returns a
:class:`DatasetDict` of every split found (split names detected from file and folder
names: ``train``/``training``, ``test``/``testing``, ``validation``/``val``/``valid``/
``dev``), with ``split`` the one :class:`~atdata_dagster.dataset.Dataset`; an unknown split
is a ``ValueError`` and a location with no shards a ``FileNotFoundError``. Where it does
more: globs in ``data_files`` are expanded, a directory whose shards are in split
sub-folders (``data/train/*.tar``) is read, and a bare index name (``"mnist"``) resolves
through the index when no such file exists.
"""

from __future__ import annotations

import glob
import os
import re
import threading
from pathlib import Path
from typing import Any, Generic, Mapping, Sequence, TypeVar

from .dataset import Dataset
from .errors import DataFilesNotFoundError, InvalidRefError, UnknownSplitError
from .index.index import Index
from .samples import DictSample

__all__ = ["DatasetDict", "get_default_index", "load_dataset", "set_default_index"]

T = TypeVar("T")

# ------------------------------------------------------------------ the default index

_default_index: Index | None = None
_default_lock = threading.Lock()


def get_default_index() -> Index:
    """The process-wide default :class:`Index` (``Index()``: SQLite at ``~/.atdata``), made on first use."""
    global _default_index
    if _default_index is None:
        with _default_lock:
            if _default_index is None:
                _default_index = Index()
    return _default_index


def set_default_index(index: Index | None) -> None:
    """Make ``index`` the default that :func:`load_dataset` resolves names through (``None``: back to ``Index()``)."""
    global _default_index
    with _default_lock:
        _default_index = index


# ------------------------------------------------------------------ DatasetDict


class DatasetDict(dict, Generic[T]):
    """Split name -> :class:`Dataset`, as Hugging Face's ``DatasetDict`` and atdata's.

    With exactly one split, every ``Dataset`` attribute (``ordered``, ``shuffled``,
    ``head``, ``as_type``, ``list_shards``, ...) is forwarded to it; with several, reading
    one raises ``AttributeError`` saying to pick a split first.
    """

    def __init__(self, splits: Mapping[str, Dataset[T]] | None = None, sample_type: type | None = None,
                 streaming: bool = False) -> None:
        super().__init__(splits or {})
        self._sample_type = sample_type
        self._streaming = streaming

    @property
    def sample_type(self) -> type | None:
        """The sample type of the splits (given, or the first split's)."""
        if self._sample_type is not None:
            return self._sample_type
        return next(iter(self.values())).sample_type if self else None

    @property
    def streaming(self) -> bool:
        """Whether it was loaded with ``streaming=True`` (every Dataset here streams anyway)."""
        return self._streaming

    @property
    def num_shards(self) -> dict[str, int]:
        """Shards per split."""
        return {name: len(ds.list_shards()) for name, ds in self.items()}

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if hasattr(Dataset, name):
            if len(self) == 1:
                return getattr(next(iter(self.values())), name)
            splits = ", ".join(repr(k) for k in self)
            first = next(iter(self), "train")
            raise AttributeError(
                f"'{type(self).__name__}' has {len(self)} splits ({splits}); select one first, "
                f"e.g. ds[{first!r}].{name}"
            )
        raise AttributeError(f"'{type(self).__name__}' object has no attribute {name!r}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict(self)!r})"


# ------------------------------------------------------------------ split detection

_SPLIT_NAMES = (
    ("train", "train|training"),
    ("test", "test|testing"),
    ("validation", "val|valid|validation"),
    ("validation", "dev|development"),
)
# the same patterns, in the same order, as atdata: delimited in the file name, at its
# start, as a folder in the path, at the path's start
_SPLIT_PATTERNS = [
    (re.compile(form.format(alts)), split)
    for form in (r"[_-]({})[_-]", r"^({})[_-]", r"[/\\]({})[/\\]", r"^({})[/\\]")
    for split, alts in _SPLIT_NAMES
]


def detect_split(path: str) -> str | None:
    """The split a shard path names (``train-000.tar``, ``data/test/x.tar``...), or ``None``."""
    name = Path(path).name.lower()
    for pattern, split in _SPLIT_PATTERNS:
        if pattern.search(name):
            return split
    lowered = path.lower()
    for pattern, split in _SPLIT_PATTERNS:
        if pattern.search(lowered):
            return split
    return None


def _group(shards: Sequence[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for shard in shards:
        out.setdefault(detect_split(shard) or "train", []).append(shard)
    return out


# ------------------------------------------------------------------ resolving locations

_INDEX_PREFIXES = ("at://", "@", "atdata://")
_REMOTE = ("s3://", "gs://", "http://", "https://", "az://", "file://")


def _is_brace(path: str) -> bool:
    return bool(re.search(r"\{[^}]+\}", path))


def _is_glob(path: str) -> bool:
    return "*" in path or "?" in path or ("[" in path and "]" in path)


def _expand_glob(pattern: str) -> list[str]:
    return sorted(p for p in glob.glob(os.path.expanduser(pattern), recursive=True) if os.path.isfile(p))


def _is_location(ref: Any) -> bool:
    if isinstance(ref, (os.PathLike, list, tuple)):
        return True
    if not isinstance(ref, str) or ref.startswith(_INDEX_PREFIXES):
        return False
    if "://" in ref or ref.startswith(("/", "./", "../", "~")) or _is_glob(ref) or _is_brace(ref):
        return True
    return ref.endswith(".tar") or os.path.exists(ref)


def _files(pattern: str, base: str | None) -> list[str]:
    """One ``data_files`` pattern: relative to ``base``, local globs expanded."""
    if base is not None and not pattern.startswith(_REMOTE) and not os.path.isabs(os.path.expanduser(pattern)):
        pattern = os.path.join(base, pattern)
    if not pattern.startswith(_REMOTE) and _is_glob(pattern):
        return _expand_glob(pattern)
    return [pattern]


def resolve_splits(path: str, data_files: Any = None) -> dict[str, list[str]]:
    """Split name -> shard URLs for a location (and optional ``data_files``), as atdata resolves them.

    Brace patterns stay as written (they are expanded when read, and indexed as written).
    """
    if data_files is not None:
        base = None if path.startswith(_REMOTE) else os.path.expanduser(path)
        if isinstance(data_files, (str, os.PathLike)):
            data_files = [os.fspath(data_files)]
        if isinstance(data_files, (list, tuple)):
            return {"train": [f for p in data_files for f in _files(os.fspath(p), base)]}
        if isinstance(data_files, Mapping):
            out = {}
            for split, files in data_files.items():
                files = [files] if isinstance(files, (str, os.PathLike)) else list(files)
                out[str(split)] = [f for p in files for f in _files(os.fspath(p), base)]
            return {k: v for k, v in out.items() if v}
        raise TypeError(f"data_files must be a str, a list of str or a dict split -> files, got {type(data_files).__name__}")
    if _is_brace(path):
        return {detect_split(path) or "train": [path]}
    local = os.path.expanduser(path)
    if not path.startswith(_REMOTE) and _is_glob(path):
        return _group(_expand_glob(path))
    if not path.startswith(_REMOTE) and os.path.isdir(local):
        shards = _expand_glob(os.path.join(local, "*.tar"))
        # and shards in split folders (data/train/*.tar, data/test/*.tar); other folders are not read
        shards += [s for s in _expand_glob(os.path.join(local, "*", "*.tar"))
                   if detect_split(os.path.relpath(s, local)) is not None]
        return _group([os.path.abspath(s) for s in shards])
    return {detect_split(path) or "train": [os.path.abspath(local) if "://" not in path else path]}


# ------------------------------------------------------------------ index references


def _parse_indexed(ref: str) -> tuple[str, str | None]:
    """``@handle/name[@version]`` -> (``@handle/name``, version)."""
    rest = ref[1:]
    if "/" not in rest or not rest.split("/", 1)[0] or not rest.split("/", 1)[1]:
        raise InvalidRefError(f"invalid indexed path {ref!r}: expected @handle/dataset or @did:plc:xxx/dataset")
    handle, dataset = rest.split("/", 1)
    version = None
    if "@" in dataset:
        dataset, version = dataset.rsplit("@", 1)
        if not dataset or not version:
            raise InvalidRefError(f"invalid version syntax in {ref!r}: expected @handle/dataset@version")
    return f"@{handle}/{dataset}", version


def _from_index(ref: str, sample_type: type | None, index: Any) -> Dataset:
    name, version = _parse_indexed(ref) if ref.startswith("@") else (ref, None)
    if version is not None:
        handle, bare = name[1:].split("/", 1)
        repos = getattr(index, "repos", {"local": None})
        if handle not in repos:
            raise InvalidRefError(
                f"{ref!r}: versions are resolved through labels of a local repository ({sorted(repos)}); "
                "for an atmosphere dataset use its at:// URI"
            )
        entry = index.get_entry(index.get_label(bare, version, repo=handle).cid)
    else:
        entry = index.get_dataset(name)
    if sample_type is None:
        sample_type = index.get_schema_type(entry.schema_ref, register=False)
    shard_opener = getattr(index, "shard_opener", None)
    opener = shard_opener(entry) if shard_opener is not None else getattr(index, "open_url", None)
    return Dataset[sample_type](list(entry.data_urls), metadata=entry.metadata, opener=opener, cid=entry.cid)  # type: ignore[valid-type]


# ------------------------------------------------------------------ load_dataset


def load_dataset(
    path: Any,
    sample_type: type | None = None,
    *,
    split: str | None = None,
    data_files: Any = None,
    streaming: bool = False,
    index: Any = None,
    atmosphere: Any = None,
) -> Any:
    """Open a dataset lazily, Hugging Face style; nothing is read until you iterate.

    ``path`` is a shard file (``"data/train-000.tar"``), a glob (``"data/train-*.tar"``),
    a brace pattern (``"data/part-{000..009}.tar"``), a directory (its ``*.tar``, or its
    split folders' ``*/*.tar``), a remote URL (``s3://``, ``http(s)://``), a list of
    URLs, or an index reference: a name (``"mnist"``), ``"@local/mnist"``,
    ``"@lab/mnist@1.0.0"`` (a versioned label), ``"@handle.bsky.social/mnist"`` or an
    ``at://`` URI. ``data_files`` (a pattern, a list, or ``{split: patterns}``, relative
    to ``path``) names the files explicitly.

    Returns a :class:`DatasetDict` of every split when ``split`` is ``None``, else that
    split's :class:`~atdata_dagster.dataset.Dataset`. Samples decode as ``sample_type``;
    without one, files give ``DictSample`` and index entries their recorded schema.
    ``streaming`` is accepted for Hugging Face compatibility: every dataset streams.

    Raises ``FileNotFoundError`` (:class:`~atdata_dagster.errors.DataFilesNotFoundError`)
    when a location holds no shards, ``ValueError``
    (:class:`~atdata_dagster.errors.UnknownSplitError`) for a split that is not there, and
    ``KeyError`` (:class:`~atdata_dagster.errors.NotFoundError`) for an unknown index name.
    """
    if isinstance(path, (list, tuple)):
        splits = {"train": [os.fspath(p) for p in path]} if data_files is None else resolve_splits(".", data_files)
    elif _is_location(path) or data_files is not None:
        splits = resolve_splits(os.fspath(path), data_files)
    else:
        if index is None:
            # an atmosphere client alone resolves @handle/name and at:// refs: no local index file is opened
            index = Index(path=":memory:", atmosphere=atmosphere) if atmosphere is not None else get_default_index()
        ds = _from_index(str(path), sample_type, index)
        return _pick({"train": ds}, split, ds.sample_type, streaming, path)
    if not splits:
        raise DataFilesNotFoundError(f"No data files found at path: {os.fspath(path) if not isinstance(path, (list, tuple)) else path}")
    st: type = sample_type if sample_type is not None else DictSample
    cls: Any = Dataset[st]  # type: ignore[valid-type]
    datasets = {name: cls(urls[0] if len(urls) == 1 else urls) for name, urls in splits.items()}
    return _pick(datasets, split, st, streaming, path)


def _pick(datasets: dict[str, Dataset], split: str | None, sample_type: Any, streaming: bool, path: Any) -> Any:
    if split is None:
        return DatasetDict(datasets, sample_type=sample_type, streaming=streaming)
    if split not in datasets:
        raise UnknownSplitError(f"Split '{split}' not found. Available splits: {list(datasets)} (in {path!r})")
    return datasets[split]
