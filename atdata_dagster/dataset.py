"""``Dataset[T]``: a lazy, typed view over WebDataset shard URLs.

Nothing is read until you iterate. Samples stream shard by shard through the
streaming reader (bounded memory); ``shuffled`` shuffles the shard order and keeps a
bounded buffer of raw payloads. ``Dataset[T]`` is a real (cached) subclass of
:class:`Dataset` rather than a typing alias, so it works as a Dagster input
annotation, with ``isinstance`` and with pickle.
"""

from __future__ import annotations

import copyreg
import hashlib
import os
import pickle
import random
import threading
from contextlib import closing
from itertools import islice
from typing import Any, BinaryIO, Callable, Generic, Iterable, Iterator, Sequence, TypeVar

import numpy as np

from .errors import CorruptEntryError, EmptyDatasetError, FieldMismatchError, InvalidRefError, NotFoundError, ShardError
from .loader import ShardSpec
from .shards.cache import is_local_url
from .shards.manifest import manifest_url_for, read_manifest
from .shards.offsets import ShardOffsets, locate, offsets_from_manifest, sample_at, scan_offsets
from .shards.patterns import expand_patterns
from .shards.reader import iter_samples, open_url
from .samples.codec import unpack_payload
from .samples.packable import _plan
from .stores.base import read_span

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
    ``opener(url) -> BinaryIO`` opens shards (default: local paths, ``file://`` and
    registered schemes).
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
        opener: Opener | None = None,
        cid: str | None = None,
        range_reader: Callable[[str, int, int | None], bytes] | None = None,
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
        #: CID of the index entry this dataset was opened from (``None`` for bare URLs).
        self.cid = cid
        #: ``(url, start, stop) -> bytes`` for random access (an Index passes its stores' ranged reads).
        self._range_reader = range_reader
        self._specs: list | None = None
        self._offsets: dict[int, ShardOffsets] = {}
        self._key_map: dict[str, tuple[int, int]] | None = None

    # -------------------------------------------------------------- basics
    def list_shards(self) -> list[str]:
        """The shard URLs, in order."""
        return list(self._shards)

    @property
    def shard_list(self) -> list[str]:
        return list(self._shards)

    @property
    def opener(self) -> Opener:
        return self._opener or open_url

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r}, shards={len(self._shards)})"

    def __reduce__(self):
        opener = self._opener
        if opener is not None:
            try:
                pickle.dumps(opener)
            except Exception:
                opener = None  # e.g. a bound Index method: fall back to the default opener
        range_reader = self._range_reader
        if range_reader is not None:
            try:
                pickle.dumps(range_reader)
            except Exception:
                range_reader = None  # a bound Index method: the opener's stream is used instead
        return (_rebuild, (type(self), self._shards, self.url, self.metadata, opener, self.cid, range_reader))

    def as_type(self, sample_type: type[Any]) -> "Dataset[Any]":
        """The same shards decoded as ``sample_type`` (payloads are re-read, not converted)."""
        ds = Dataset[sample_type](self._shards, metadata=self.metadata, opener=self._opener, cid=self.cid,  # type: ignore[valid-type]
                                  range_reader=self._range_reader)
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

    def _decoder(self, fields: Sequence[str] | None = None) -> Callable[[str, str, bytes], Any]:
        if fields is not None:
            return self._projector(fields)
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

    def _projector(self, fields: Sequence[str] | None) -> Callable[[str, str, bytes], Any]:
        """``decode(url, key, payload)`` decoding only ``fields`` (all when ``None``); the rest read as ``None``."""
        if fields is None:
            return self._decoder()
        st = self._require_type()
        project = _projection(st, fields)

        def decode(url: str, key: str, payload: bytes) -> Any:
            try:
                return project(payload)
            except Exception as exc:
                raise _decode_error(st, url, key, exc) from exc

        return decode

    def _samples(self, shards: Iterable[str], fields: Sequence[str] | None = None) -> Iterator[Any]:
        if fields is not None:
            decode = self._projector(fields)
            for url, key, payload in self._iter_with_url(shards):
                yield decode(url, key, payload)
            return
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

    def ordered(self, batch_size: int | None = None, *, fields: Sequence[str] | None = None) -> Iterator[Any]:
        """Samples (or :class:`SampleBatch` es of ``batch_size``) in shard order.

        ``fields=[...]`` decodes only the named fields; the others read as ``None``.
        """
        it = self._samples(self._shards, fields)
        return it if batch_size is None else self._batched(it, batch_size)

    def shuffled(
        self, buffer_size: int = 10_000, batch_size: int | None = None, seed: int | None = None,
        *, fields: Sequence[str] | None = None,
    ) -> Iterator[Any]:
        """Samples in random order: shuffled shard order plus a shuffle buffer of ``buffer_size``.

        Memory is bounded by ``buffer_size`` raw payloads. The same ``seed`` gives the
        same order. ``fields=[...]`` decodes only the named fields (the others are ``None``).
        """
        if not isinstance(buffer_size, int) or buffer_size < 1:
            raise ValueError(f"buffer_size must be a positive integer, got {buffer_size!r}")
        it = self._shuffled(buffer_size, seed, fields)
        return it if batch_size is None else self._batched(it, batch_size)

    def _shuffled(self, buffer_size: int, seed: int | None, fields: Sequence[str] | None = None) -> Iterator[Any]:
        rng = random.Random(seed)
        shards = list(self._shards)
        rng.shuffle(shards)
        decode = self._decoder(fields)
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

    # -------------------------------------------------------------- sizes, random access
    def __bool__(self) -> bool:
        return True  # a Dataset always names shards; never fall back to len() for truth

    def __len__(self) -> int:
        """The number of samples, from the index entry's per-shard counts or the manifests.

        Raises ``TypeError`` when neither records them (e.g. bare shard URLs without
        manifest sidecars): :meth:`count` streams the shards to count them.
        """
        return sum(spec.num_samples for spec in self.shard_specs())

    def shard_specs(self) -> list[Any]:
        """Per-shard :class:`~atdata_dagster.loader.ShardSpec` (URL, sample count, checksum, bytes).

        Counts come from the entry's ``stats.shard_samples`` or, failing that, from each
        shard's ``.manifest.json``; raises ``TypeError`` if neither is available.
        """
        if self._specs is None:
            meta = self.metadata if isinstance(self.metadata, dict) else {}
            checksums = meta.get("checksums") or {}
            if not (isinstance(checksums, dict) and all(isinstance(v, str) for v in checksums.values())):
                raise CorruptEntryError(
                    f"{self!r}: metadata['checksums'] is {type(checksums).__name__} {checksums!r:.80}, expected a map "
                    "of shard URL -> SHA-256 hex; repair the entry's metadata or read with verify=False",
                    cid=self.cid, field="checksums",
                )
            stats = meta.get("stats") if isinstance(meta.get("stats"), dict) else {}
            n = len(self._shards)
            counts, sizes = stats.get("shard_samples"), stats.get("shard_bytes")
            if not _ints(counts, n):  # absent or malformed: the manifests may still know
                counts = self._manifest_counts()
            if not _ints(sizes, n):
                sizes = [None] * n
            self._specs = [
                ShardSpec(url=u, num_samples=c, sha256=checksums.get(u), nbytes=b)
                for u, c, b in zip(self._shards, counts, sizes)
            ]
        return list(self._specs)

    def _manifest_counts(self) -> list[int]:
        counts = []
        for url in self._shards:
            try:
                with closing(self.opener(manifest_url_for(url))) as f:
                    manifest = read_manifest(f)
                header = manifest.get("header") if isinstance(manifest.get("header"), dict) else manifest
                n = header.get("num_samples")
                if not isinstance(n, int) or isinstance(n, bool) or n < 0:
                    raise ValueError(f"num_samples {n!r}")
                counts.append(n)
            except Exception:
                raise TypeError(
                    f"len() of {self!r} is unknown: its index entry records no per-shard sample counts and "
                    f"shard {url} has no readable .manifest.json; use ds.count() (streams every shard) or "
                    "open the dataset through its index (index.dataset(name))"
                ) from None
        return counts

    def identity(self) -> str:
        """The entry CID, or for bare URLs a fingerprint of the shard URLs and checksums."""
        if self.cid:
            return self.cid
        checksums = (self.metadata or {}).get("checksums") or {}
        h = hashlib.sha256()
        for url in self._shards:
            h.update(url.encode("utf-8") + b"\0" + str(checksums.get(url, "")).encode("ascii") + b"\n")
        return "urls:" + h.hexdigest()[:32]

    def _cumulative(self) -> list[int]:
        cum = [0]
        for spec in self.shard_specs():
            cum.append(cum[-1] + spec.num_samples)
        return cum

    def shard_offsets(self, shard: int) -> ShardOffsets:
        """Sample offsets of shard number ``shard``: from its manifest sidecar, else a header-only scan (cached)."""
        got = self._offsets.get(shard)
        if got is not None:
            return got
        url = self._shards[shard]
        stem = url[:-4] if url.endswith(".tar") else url
        try:
            with closing(self.opener(stem + ".manifest.parquet")) as f:
                got = offsets_from_manifest(f.read())
        except Exception:  # no sidecar (or unreadable): scan the headers instead
            got = None
        if got is None:
            with closing(self._open(url)) as f:
                got = scan_offsets(f, url)
        self._offsets[shard] = got
        return got

    def _sample_in_shard(self, shard: int, i: int, key: str | None = None) -> Any:
        url = self._shards[shard]
        offsets = self.shard_offsets(shard)
        start, stop = offsets.span(i)
        end = None if stop < 0 else stop
        if self._range_reader is not None and not is_local_url(url):
            data = self._range_reader(url, start, end)  # S3: one ranged GET
        else:
            with closing(self._open(url)) as f:
                data = read_span(f, start, end)  # a seek, for local files
        data += bytes(1024)  # an end-of-archive marker after the sample
        k, payload = sample_at(data, url, key if key is not None else offsets.keys[i])
        return self._decoder()(url, k, payload)

    def __getitem__(self, i: int) -> T:
        """The ``i``-th sample in :meth:`ordered` order (negative indices count from the end).

        Uses per-shard sample offsets (manifest sidecar, else a header-only scan done once
        per shard and cached), so each lookup reads only that sample's bytes.
        """
        if not isinstance(i, (int, np.integer)) or isinstance(i, bool):
            raise TypeError(f"dataset indices must be integers, got {type(i).__name__}")
        n = len(self)
        i = int(i)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"sample index {i} is out of range for a dataset of {n} samples")
        shard, j = locate(self._cumulative(), i)
        return self._sample_in_shard(shard, j)

    def get(self, key: str) -> T:
        """The sample whose key is ``key`` (a key map is built once from the offset indexes)."""
        if self._key_map is None:
            key_map: dict[str, tuple[int, int]] = {}
            for s in range(len(self._shards)):
                for j, k in enumerate(self.shard_offsets(s).keys):
                    key_map.setdefault(k, (s, j))
            self._key_map = key_map
        where = self._key_map.get(key)
        if where is None:
            raise NotFoundError(f"no sample with key {key!r} in {self!r}")
        return self._sample_in_shard(where[0], where[1], key)

    def torch(
        self,
        *,
        shuffle: bool = False,
        seed: int = 0,
        batch_size: int | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        drop_last: bool = False,
        verify: bool = True,
        fields: Sequence[str] | None = None,
        shuffle_buffer_bytes: int = 64 << 20,
        cache_dir: str | os.PathLike | None = None,
        cache_limit_bytes: int | None = None,
    ) -> Any:
        """A ``torch.utils.data.IterableDataset`` over this dataset for training (``pip install atdata-dagster[torch]``).

        Every sample is seen exactly once per epoch across ranks and DataLoader workers,
        every rank gets the same number of samples (``drop_last`` drops the remainder,
        otherwise it is padded by repeating from the start), ``set_epoch(n)`` reorders
        deterministically from ``(seed, n)``, ``state_dict()``/``load_state_dict()``
        resume mid-epoch (also onto another worker count), and with ``verify=True`` no
        sample of a shard whose SHA-256 differs from the recorded one is yielded.
        ``batch_size`` makes it yield collated batches (dicts of tensors); use the
        DataLoader with ``batch_size=None`` then. ``rank``/``world_size`` default to
        ``torch.distributed`` when it is initialised. Remote shards are cached under
        ``cache_dir`` (LRU, ``cache_limit_bytes``). See docs/training.md.
        """
        from .loader_torch import TorchDataset  # torch is an optional extra: import it only when asked for

        return TorchDataset(
            self, shuffle=shuffle, seed=seed, batch_size=batch_size, rank=rank, world_size=world_size,
            drop_last=drop_last, verify=verify, fields=fields, shuffle_buffer_bytes=shuffle_buffer_bytes,
            cache_dir=cache_dir, cache_limit_bytes=cache_limit_bytes,
        )


def _ints(values: Any, n: int) -> bool:
    """``values`` is a list of ``n`` non-negative ints (bools excluded)."""
    return (isinstance(values, list) and len(values) == n
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values))


def _projection(st: type, fields: Sequence[str]) -> Callable[[bytes], Any]:
    """``payload -> sample`` decoding only ``fields`` of ``st``; its other fields are ``None``."""
    if isinstance(fields, str) or not all(isinstance(f, str) for f in fields):
        raise TypeError(f"fields must be a list of field names, got {fields!r}")
    wanted = frozenset(fields)
    try:
        plan = _plan(st)
    except Exception:  # DictSample and duck-typed samples: the payload's own keys
        plan = None
    if plan is None:
        from_data = st.from_data

        def project_dict(payload: bytes) -> Any:
            data = unpack_payload(payload)
            return from_data({k: (v if k in wanted else None) for k, v in data.items()})

        return project_dict
    known = [d[0] for d in plan.decoders]
    unknown = sorted(wanted - set(known))
    if unknown:
        raise FieldMismatchError(f"{st.__name__} has no field(s) {unknown}; its fields are {known}")
    decoders = [(name, convert if name in wanted else None, name in wanted) for name, convert, *_ in plan.decoders]

    def project(payload: bytes) -> Any:
        data = unpack_payload(payload)
        obj = st.__new__(st)
        for name, convert, keep in decoders:
            value = data.get(name) if keep else None
            if convert is not None and value is not None:
                value = convert(value)
            object.__setattr__(obj, name, value)
        return obj

    return project


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


def _rebuild(cls: type, shards: list[str], url: str, metadata: dict | None, opener: Opener | None,
             cid: str | None = None, range_reader: Any = None) -> Dataset:
    # ``cls`` itself pickles as ``Dataset[T]`` (see _reduce_dataset_class)
    ds = cls(shards, metadata=metadata, opener=opener, cid=cid, range_reader=range_reader)
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
    return Dataset[cls_t](  # type: ignore[valid-type]
        list(entry.data_urls), metadata=entry.metadata, opener=getattr(index, "open_url", None), cid=entry.cid
    )
