"""``Dataset[T]``: a lazy, typed view over WebDataset shard URLs.

Nothing is read until you iterate. Samples stream shard by shard through the
streaming reader (bounded memory); ``shuffled`` shuffles the shard order and keeps a
bounded buffer of raw payloads. ``Dataset[T]`` is a real (cached) subclass of
:class:`Dataset` rather than a typing alias, so it works as a Dagster input
annotation, with ``isinstance`` and with pickle.
"""

from __future__ import annotations

import copyreg
import os
import pickle
import random
import threading
from contextlib import closing
from itertools import islice
from typing import Any, BinaryIO, Callable, Generic, Iterable, Iterator, Sequence, TypeVar

import numpy as np

from .errors import ConfigurationTypeError, EmptyDatasetError, InvalidRefError, NotFoundError, ShardError
from .shards.patterns import expand_patterns
from .shards.reader import ShardOpener, iter_samples
from .stores.openers import default_opener

__all__ = ["Dataset", "SampleBatch", "load_dataset"]

T = TypeVar("T")
Opener = Callable[[str], BinaryIO]


def _default_sample_type() -> type | None:
    try:
        from .samples.packable import DictSample
    except ImportError:  # pragma: no cover - samples package missing
        return None
    return DictSample


class SampleBatch(Generic[T]):
    """A list of samples with per-field access: ``batch.label`` -> list, ``batch.image`` -> stacked array.

    A field whose values are all numpy arrays of one shape is ``np.stack``-ed into one
    array with a leading batch dimension; any other field is a plain list.
    """

    def __init__(self, samples: Sequence[T], sample_type: type | None = None):
        self.samples: list[T] = list(samples)
        self.sample_type = sample_type
        self._fields: dict[str, Any] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[T]:
        return iter(self.samples)

    def __getitem__(self, i: int) -> T:
        return self.samples[i]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        cache = self.__dict__.get("_fields")
        if cache is None:
            raise AttributeError(name)
        if name in cache:
            return cache[name]
        try:
            values = [getattr(s, name) for s in self.samples]
        except AttributeError:
            type_name = getattr(self.sample_type, "__name__", "sample")
            raise AttributeError(f"{type_name} batch has no field {name!r}") from None
        out: Any = values
        if values and all(isinstance(v, np.ndarray) for v in values):
            try:
                out = np.stack(values)
            except ValueError:  # ragged arrays: keep the list
                out = values
        cache[name] = out
        return out

    def __repr__(self) -> str:
        return f"SampleBatch[{getattr(self.sample_type, '__name__', '?')}](size={len(self.samples)})"


class _DatasetMeta(type):
    """Metaclass so ``Dataset[T]`` classes themselves pickle (rebuilt via ``Dataset[T]``)."""


_specialized: dict[type, type] = {}
_lock = threading.Lock()


class Dataset(Generic[T], metaclass=_DatasetMeta):
    """A lazy dataset over one URL, a brace pattern (``{000000..000003}``, ``{a,b}``) or a list of them.

    ``Dataset[T](url)`` decodes samples as ``T`` (``T.from_bytes``); plain
    ``Dataset(url)`` yields :class:`~atdata_dagster.samples.packable.DictSample`.
    ``opener`` opens shards: a :class:`~atdata_dagster.shards.reader.ShardOpener` (the
    ``Index`` builds one that carries the right credentials) or a plain
    ``opener(url) -> BinaryIO``; default: :func:`~atdata_dagster.stores.default_opener`
    (local paths, ``file://``, ``http(s)://``, ``s3://`` on the default AWS credential chain).
    A Dataset pickles with its opener (e.g. into DataLoader workers); an opener that
    cannot be pickled makes pickling raise :class:`ConfigurationTypeError`.
    """

    sample_type: Any = None  # set on the Dataset[T] subclasses

    def __class_getitem__(cls, item: Any) -> Any:
        if not isinstance(item, type):
            # TypeVars, strings, typing constructs: a typing alias, for annotations only.
            return super().__class_getitem__(item)  # type: ignore[misc]
        with _lock:
            sub = _specialized.get(item)
            if sub is None:
                name = f"Dataset[{item.__qualname__}]"
                sub = _DatasetMeta(
                    name,
                    (Dataset,),
                    {"sample_type": item, "__module__": Dataset.__module__, "__qualname__": name, "__doc__": Dataset.__doc__},
                )
                _specialized[item] = sub
        return sub

    def __init__(
        self,
        url: str | os.PathLike | Sequence[str],
        *,
        metadata: dict | None = None,
        opener: ShardOpener | Opener | None = None,
    ):
        if isinstance(url, (str, os.PathLike)):
            self.url = os.fspath(url)
            self._shards = expand_patterns([self.url])
        else:
            # Each element may itself be a brace pattern: atdata indexes ``ds.url``
            # verbatim when inserting without a store, and expands it on read.
            given = [os.fspath(u) for u in url]
            if not given:
                raise EmptyDatasetError("a Dataset needs at least one shard URL; got an empty list")
            self._shards = expand_patterns(given)  # one budget for all patterns
            if len(given) == 1:
                self.url = given[0]
            else:
                from .shards.writer import brace_list

                self.url = brace_list(self._shards)
        if not self._shards or not all(self._shards):
            raise EmptyDatasetError(f"dataset URL {url!r} names no shards")
        st = type(self).sample_type
        self.sample_type = st if st is not None else _default_sample_type()
        self.metadata = metadata
        self._opener = opener

    # -------------------------------------------------------------- basics
    def list_shards(self) -> list[str]:
        """The shard URLs, in order."""
        return list(self._shards)

    @property
    def shard_list(self) -> list[str]:
        return list(self._shards)

    @property
    def opener(self) -> ShardOpener | Opener:
        """What opens this dataset's shards (callable as ``opener(url)``)."""
        return self._opener if self._opener is not None else default_opener()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r}, shards={len(self._shards)})"

    def __reduce__(self):
        opener = self._opener
        if opener is not None:
            try:
                pickle.dumps(opener)
            except Exception as exc:  # never fall back silently: another opener may lack the credentials
                raise ConfigurationTypeError(
                    f"{type(self).__name__}({self.url!r}) cannot be pickled: its shard opener {opener!r} cannot "
                    f"({type(exc).__name__}: {exc}). Build the dataset with a picklable opener (index.dataset(...) "
                    "gives one; S3 stores must be configured with credentials, not client=), or open it in the "
                    "worker process"
                ) from None
        return (_rebuild, (type(self), self._shards, self.url, self.metadata, opener))

    def as_type(self, sample_type: type[Any]) -> "Dataset[Any]":
        """The same shards decoded as ``sample_type`` (payloads are re-read, not converted)."""
        ds = Dataset[sample_type](self._shards, metadata=self.metadata, opener=self._opener)  # type: ignore[valid-type]
        ds.url = self.url
        return ds

    # -------------------------------------------------------------- reading
    def _open(self, url: str) -> BinaryIO:
        try:
            return self.opener(url)
        except FileNotFoundError as exc:
            raise ShardError(
                f"shard {url} does not exist (moved, deleted or garbage-collected?); "
                "check the dataset's URLs or re-materialize it"
            ) from exc
        except OSError as exc:
            raise ShardError(f"cannot open shard {url}: {exc}") from exc

    def iter_raw(self, shards: Iterable[str] | None = None) -> Iterator[tuple[str, bytes]]:
        """Yield ``(key, msgpack payload)`` for every sample, shard by shard, undecoded."""
        for url in self._shards if shards is None else shards:
            with closing(self._open(url)) as f:
                yield from iter_samples(f, url)

    def _iter_with_url(self, shards: Iterable[str]) -> Iterator[tuple[str, str, bytes]]:
        for url in shards:
            with closing(self._open(url)) as f:
                for key, payload in iter_samples(f, url):
                    yield url, key, payload

    def _decoder(self) -> Callable[[str, str, bytes], Any]:
        st = self._require_type()
        from_bytes = st.from_bytes

        def decode(url: str, key: str, payload: bytes) -> Any:
            try:
                return from_bytes(payload)
            except Exception as exc:
                raise _decode_error(st, url, key, exc) from exc

        return decode

    def _require_type(self) -> Any:
        st = self.sample_type
        if st is None:  # pragma: no cover - samples package missing
            raise ShardError("no sample type available to decode samples; use Dataset[YourSample]")
        return st

    def _samples(self, shards: Iterable[str]) -> Iterator[Any]:
        st = self._require_type()
        from_bytes = st.from_bytes
        for url in shards:
            with closing(self._open(url)) as f:
                for key, payload in iter_samples(f, url):
                    try:
                        sample = from_bytes(payload)
                    except Exception as exc:
                        raise _decode_error(st, url, key, exc) from exc
                    yield sample

    def _batched(self, it: Iterator[Any], batch_size: int) -> Iterator[SampleBatch[T]]:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        st = self.sample_type
        while True:
            chunk = list(islice(it, batch_size))
            if not chunk:
                return
            yield SampleBatch(chunk, st)

    def ordered(self, batch_size: int | None = None) -> Iterator[Any]:
        """Samples (or :class:`SampleBatch` es of ``batch_size``) in shard order."""
        it = self._samples(self._shards)
        return it if batch_size is None else self._batched(it, batch_size)

    def shuffled(self, buffer_size: int = 10_000, batch_size: int | None = None, seed: int | None = None) -> Iterator[Any]:
        """Samples in random order: shuffled shard order plus a shuffle buffer of ``buffer_size``.

        Memory is bounded by ``buffer_size`` raw payloads. The same ``seed`` gives the
        same order.
        """
        if not isinstance(buffer_size, int) or buffer_size < 1:
            raise ValueError(f"buffer_size must be a positive integer, got {buffer_size!r}")
        it = self._shuffled(buffer_size, seed)
        return it if batch_size is None else self._batched(it, batch_size)

    def _shuffled(self, buffer_size: int, seed: int | None) -> Iterator[Any]:
        rng = random.Random(seed)
        shards = list(self._shards)
        rng.shuffle(shards)
        decode = self._decoder()
        buf: list[tuple[str, str, bytes]] = []
        randrange = rng.randrange
        for item in self._iter_with_url(shards):
            if len(buf) < buffer_size:
                buf.append(item)
                continue
            j = randrange(buffer_size)
            out, buf[j] = buf[j], item
            yield decode(*out)
        rng.shuffle(buf)
        for item in buf:
            yield decode(*item)

    def __iter__(self) -> Iterator[T]:
        return self.ordered()

    def head(self, n: int = 5) -> list[T]:
        """The first ``n`` samples (reads only as much as needed)."""
        with closing(self.ordered()) as it:  # type: ignore[arg-type]
            return list(islice(it, n))

    def count(self) -> int:
        """Number of samples (streams every shard; nothing is decoded)."""
        return sum(1 for _ in self.iter_raw())


def _decode_error(st: type, url: str, key: str, exc: Exception) -> ShardError:
    return ShardError(
        f"shard {url}: sample {key!r} does not decode as {st.__name__}: {exc}. "
        "Read it as Dataset[DictSample] to see its fields, or use the sample type it "
        "was written with (index.decode_schema(entry.schema_ref))"
    )


def _specialize(sample_type: type) -> type:
    return Dataset[sample_type]  # type: ignore[valid-type]


def _reduce_dataset_class(cls: type) -> Any:
    st = cls.__dict__.get("sample_type")
    if st is not None and _specialized.get(st) is cls:
        return _specialize, (st,)
    return cls.__qualname__  # importable class: pickled by reference


copyreg.pickle(_DatasetMeta, _reduce_dataset_class)


def _rebuild(cls: type, shards: list[str], url: str, metadata: dict | None, opener: Any) -> Dataset:
    # ``cls`` itself pickles as ``Dataset[T]`` (see _reduce_dataset_class)
    ds = cls(shards, metadata=metadata, opener=opener)
    ds.url = url
    return ds


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
        from .local import Index

        index = Index()
    entry = index.get_dataset(ref)
    cls_t = sample_type or index.decode_schema(entry.schema_ref)
    shard_opener = getattr(index, "shard_opener", None)
    opener = shard_opener(entry) if shard_opener is not None else getattr(index, "open_url", None)
    return Dataset[cls_t](list(entry.data_urls), metadata=entry.metadata, opener=opener)  # type: ignore[valid-type]
