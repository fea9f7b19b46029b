"""``Dataset[T]``: a lazy, typed view over WebDataset shard URLs.

Nothing is read until you iterate. Local shards are memory-mapped and indexed in one
pass over their tar headers (:mod:`.shards.fastread`); remote shards stream through the
streaming reader (bounded memory). Batches decode straight into per-field columns
(:mod:`.samples.batch`). ``shuffled`` is a global sample-level permutation over mapped
shards, or a shuffled shard order plus a byte-bounded buffer (:mod:`.shuffle`).
``Dataset[T]`` is a real (cached) subclass of
:class:`Dataset` rather than a typing alias, so it works as a Dagster input
annotation, with ``isinstance`` and with pickle.
"""

from __future__ import annotations

import copy
import dataclasses
import copyreg
import hashlib
import os
import pickle
import typing
import re
import threading
import warnings
from contextlib import closing
from itertools import islice
from pathlib import Path
from typing import Any, BinaryIO, Callable, Generic, Iterable, Iterator, Mapping, Sequence, TypeVar

import numpy as np

from .errors import (
    ConfigurationError,
    ConfigurationTypeError,
    CorruptEntryError,
    DecodeError,
    EmptyDatasetError,
    FieldMismatchError,
    NotFoundError,
    PartialFailureError,
    PayloadTypeError,
    SchemaError,
    ShardError,
    ShardNotFoundError,
)
from .lenses import LensNetwork
from .stores.sources import SourceOpener, URLSource, is_data_source
from .loader import ShardSpec
from .samples.batch import BatchDecoder, column_of, rows_from_columns
from .samples.codec import unpack_payload
from .samples.packable import DictSample, _plan
from .shards.cache import is_local_url
from .shards.fastread import ShardIndex, iter_payload_views, open_index, sample_key
from .shards.manifest import manifest_url_for, read_manifest
from .shards.query import QueryExecutor, query_fields
from .shards.offsets import ShardOffsets, locate, offsets_from_manifest, sample_at, scan_offsets
from .shards.patterns import brace_list, expand_patterns
from .shards.reader import ShardOpener, iter_samples
from .shards.writer import ShardWriter, write_all
from .shuffle import DEFAULT_BUFFER_BYTES, GLOBAL_SHUFFLE_MAX, ShuffleBuffer, epoch_rng, global_batches, global_order
from .stores.base import read_span
from .stores.disk import PathStore
from .stores.openers import default_opener

__all__ = ["Dataset", "SampleBatch", "write_samples"]

T = TypeVar("T")
Opener = Callable[[str], BinaryIO]


def _default_sample_type() -> type | None:
    return DictSample


class SampleBatch(Generic[T]):
    """A batch of samples with per-field access: ``batch.label`` -> list, ``batch.image`` -> stacked array.

    A field whose values are all numpy arrays of one shape is one array with a leading
    batch dimension; any other field is a plain list. Batches read through the batched
    fast path hold only these columns; ``samples`` (and iteration, indexing) builds the
    sample objects on first use.
    """

    def __init__(self, samples: Sequence[T], sample_type: type | None = None):
        self._samples: list[T] | None = list(samples)
        self._n = len(self._samples)
        self._sample_type = sample_type
        self._fields: dict[str, Any] = {}

    @property
    def sample_type(self) -> type | None:
        """The sample type: given, else ``T`` of ``SampleBatch[T](...)`` (as atdata), else the first sample's type."""
        st = self.__dict__.get("_sample_type")
        if st is None:
            args = typing.get_args(self.__dict__.get("__orig_class__"))
            if args and isinstance(args[0], type):
                st = args[0]
            elif self._samples:
                st = type(self._samples[0])
            self._sample_type = st
        return st

    @sample_type.setter
    def sample_type(self, value: type | None) -> None:
        self._sample_type = value

    @classmethod
    def from_columns(cls, columns: dict[str, Any], n: int, sample_type: type) -> "SampleBatch[T]":
        """A batch of ``n`` samples given as decoded columns ``{field: array or list}``."""
        batch = cls.__new__(cls)
        batch._samples = None
        batch._n = n
        batch._sample_type = sample_type
        batch._fields = dict(columns)
        return batch

    @property
    def samples(self) -> list[T]:
        if self._samples is None:
            self._samples = rows_from_columns(self.sample_type, self._fields, self._n)  # type: ignore[arg-type]
        return self._samples

    def __len__(self) -> int:
        return self._n

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
        samples = self.__dict__.get("_samples")
        try:
            if samples is None:
                raise AttributeError(name)
            values = [getattr(s, name) for s in samples]
        except AttributeError:
            type_name = getattr(self.sample_type, "__name__", "sample")
            raise AttributeError(f"{type_name} batch has no field {name!r}") from None
        out = cache[name] = column_of(values)
        return out

    def __repr__(self) -> str:
        return f"SampleBatch[{getattr(self.sample_type, '__name__', '?')}](size={self._n})"


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
        url: str | os.PathLike | Sequence[str] | Any = None,
        *,
        metadata: dict | None = None,
        opener: ShardOpener | Opener | None = None,
        cid: str | None = None,
        metadata_url: str | None = None,
        source: Any = None,
    ):
        if source is None and is_data_source(url):
            source, url = url, None  # atdata's Dataset(source): a DataSource as the first argument
        if source is not None:
            if not is_data_source(source):
                raise ConfigurationTypeError(
                    f"Dataset(source=...) needs a data source with list_shards() and open_shard() (URLSource, "
                    f"S3Source, BlobSource), got {type(source).__name__}"
                )
            self.source = source
            url = getattr(source, "url", None) or list(source.list_shards())
            if opener is None:
                opener = SourceOpener(source)
        else:
            self.source = None
        if url is None:
            raise ConfigurationTypeError("Dataset() needs a shard URL, a list of URLs, or source= (a data source)")
        if isinstance(url, (str, os.PathLike)):
            self.url = os.fspath(url)
            self._shards = expand_patterns([self.url])
            given = [self.url]
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
                self.url = brace_list(self._shards)
        if not self._shards or not all(self._shards):
            raise EmptyDatasetError(f"dataset URL {url!r} names no shards")
        if self.source is None:  # atdata's ds.source: the URL source this dataset reads
            self.source = URLSource(self.url)
        #: The URLs as written (brace patterns unexpanded): what an index records for this
        #: dataset when it indexes it in place, as atdata does, so both give the same CID.
        self.urls_as_given: list[str] = given
        st = type(self).sample_type
        self.sample_type = st if st is not None else _default_sample_type()
        self._metadata = metadata
        self._opener = opener
        #: CID of the index entry this dataset was opened from (``None`` for bare URLs).
        self.cid = cid
        self._specs: list | None = None
        self._offsets: dict[int, ShardOffsets] = {}
        self._key_map: dict[str, tuple[int, int]] | None = None
        self._mapped: dict[int, ShardIndex | None] = {}  # local shards indexed in memory maps, for ds[i]
        self._cum: list[int] | None = None
        #: Fields every read decodes (:meth:`select_columns`); ``None``: all of them.
        self.columns: tuple[str, ...] | None = None
        #: lazy per-sample steps added by :meth:`filter` / :meth:`map`: ("filter" | "map", fn)
        self._steps: tuple[tuple[str, Callable[[Any], Any]], ...] = ()
        #: for a lens view (:meth:`as_type`): the dataset whose samples the steps start from
        self._base: Dataset[Any] | None = None
        #: atdata's ``metadata_url=``: a msgpack map of dataset metadata, fetched on first use
        self.metadata_url: str | None = metadata_url

    # -------------------------------------------------------------- basics
    @property
    def metadata(self) -> dict | None:
        """The dataset's metadata: given (an index entry's), else fetched once from ``metadata_url``.

        ``metadata_url`` (atdata's) names a msgpack map, read with this dataset's opener
        (a local path, ``file://``, ``http(s)://`` or, through an index, ``s3://``).
        """
        if self._metadata is None and self.metadata_url:
            with closing(self.opener(self.metadata_url)) as f:
                data = f.read(_MAX_METADATA_BYTES + 1)
            if len(data) > _MAX_METADATA_BYTES:
                raise ShardError(f"metadata at {self.metadata_url} is larger than {_MAX_METADATA_BYTES} bytes")
            try:
                self._metadata = unpack_payload(data)
            except DecodeError as exc:
                raise ShardError(f"metadata at {self.metadata_url} is not a msgpack map: {exc}") from None
        return self._metadata

    @metadata.setter
    def metadata(self, value: dict | None) -> None:
        self._metadata = value

    def list_shards(self) -> list[str]:
        """The shard URLs, in order."""
        return list(self._shards)

    @property
    def shard_list(self) -> list[str]:
        """Deprecated (atdata 0.7): use :meth:`list_shards`."""
        warnings.warn("shard_list is deprecated, use list_shards() instead", DeprecationWarning, stacklevel=2)
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
            except Exception as exc:  # noqa: BLE001 - pickle raises anything an object's __reduce__ raises; reported as a typed error
                raise ConfigurationTypeError(
                    f"{type(self).__name__}({self.url!r}) cannot be pickled: its shard opener {opener!r} cannot "
                    f"({type(exc).__name__}: {exc}). Build the dataset with a picklable opener (index.dataset(...) "
                    "gives one; S3 stores must be configured with credentials, not client=), or open it in the "
                    "worker process"
                ) from None
        return (_rebuild, (type(self), self._shards, self.url, self._metadata, opener, self.cid, self.columns,
                           self.urls_as_given, self.metadata_url, self._steps, self._base))

    def select_columns(self, columns: Sequence[str] | None) -> "Dataset[T]":
        """The same dataset, every read of which decodes only ``columns`` (the other fields read as ``None``).

        A projection for the whole dataset: iteration, :meth:`ordered`, :meth:`shuffled`,
        ``ds[i]``, :meth:`get` and :meth:`torch` all decode just these fields (an explicit
        ``fields=`` still wins). ``None`` selects every field again. Unknown names raise
        :class:`FieldMismatchError` now, not mid-epoch. Nothing is re-read or copied.
        """
        if columns is not None:
            _projection(self._require_type(), columns)
        ds = copy.copy(self)
        ds.columns = None if columns is None else tuple(columns)
        return ds

    # -------------------------------------------------------------- zero-copy derived datasets
    def parent_cids(self) -> list[str]:
        """CIDs of the index entries these shards come from (for lineage)."""
        meta = self.metadata if isinstance(self.metadata, dict) else {}
        derived = meta.get("derived_from")
        if isinstance(derived, list) and all(isinstance(c, str) for c in derived):
            return list(derived)
        return [self.cid] if self.cid else []

    def _subset_metadata(self, positions: Sequence[int]) -> dict[str, Any]:
        """The shard facts (checksums, per-shard counts and sizes, manifests) of ``positions``."""
        meta = self.metadata if isinstance(self.metadata, dict) else {}
        urls = [self._shards[i] for i in positions]
        raw_checksums, raw_stats = meta.get("checksums"), meta.get("stats")
        checksums: dict[str, Any] = raw_checksums if isinstance(raw_checksums, dict) else {}
        out: dict[str, Any] = {"checksums": {u: checksums[u] for u in urls if u in checksums}}
        stats: dict[str, Any] = raw_stats if isinstance(raw_stats, dict) else {}
        counts, sizes, n = stats.get("shard_samples"), stats.get("shard_bytes"), len(self._shards)
        if isinstance(counts, list) and _ints(counts, n):
            picked = {"shard_samples": [counts[i] for i in positions]}
            if isinstance(sizes, list) and _ints(sizes, n):
                picked["shard_bytes"] = [sizes[i] for i in positions]
            out["stats"] = picked
        manifests = meta.get("manifests")
        if isinstance(manifests, list):
            wanted = {manifest_url_for(u) for u in urls}
            out["manifests"] = [m for m in manifests if m in wanted]
        out["derived_from"] = self.parent_cids()
        return out

    def select_shards(self, shards: Sequence[int] | Sequence[str] | slice) -> "Dataset[T]":
        """A dataset over some of these shards (positions, a slice, or URLs), in the order given.

        Nothing is read or copied: the result names the same shard files, with their
        recorded checksums, counts and manifests, and remembers the entries they came from,
        so an IO manager (or :meth:`Index.reference_dataset`) indexes it as a zero-copy
        entry whose lineage names its parents.
        """
        n = len(self._shards)
        if isinstance(shards, slice):
            positions = list(range(n))[shards]
        else:
            where = {u: i for i, u in enumerate(self._shards)}
            positions = []
            for s in shards:
                if isinstance(s, str):
                    if s not in where:
                        raise IndexError(f"{s!r} is not a shard of {self!r}")
                    positions.append(where[s])
                elif isinstance(s, (int, np.integer)) and not isinstance(s, bool) and -n <= s < n:
                    positions.append(int(s) % n)
                else:
                    raise IndexError(f"shard position {s!r} is out of range for {n} shard(s)")
        if not positions:
            raise EmptyDatasetError(f"select_shards selected no shard of {self!r}")
        ds = type(self)([self._shards[i] for i in positions], metadata=self._subset_metadata(positions), opener=self._opener)
        ds.columns = self.columns
        return ds

    @staticmethod
    def concat(datasets: Sequence["Dataset[Any]"], *, opener: ShardOpener | Opener | None = None) -> "Dataset[Any]":
        """One dataset over the shards of ``datasets``, in order, with no copy (see :meth:`select_shards`).

        All must have the same sample type. Each shard is opened with the opener of the
        dataset it came from, unless ``opener`` is given.
        """
        parts = list(datasets)
        if not parts:
            raise EmptyDatasetError("Dataset.concat needs at least one dataset")
        types = {d.sample_type for d in parts}
        if len(types) > 1:
            names = sorted(getattr(t, "__name__", str(t)) for t in types)
            raise SchemaError(f"Dataset.concat: the datasets have different sample types {names}; "
                              "convert them with as_type(...) first")
        metas = [d._subset_metadata(range(len(d._shards))) for d in parts]
        meta: dict[str, Any] = {"checksums": {}, "derived_from": []}
        for m in metas:
            meta["checksums"].update(m["checksums"])
            meta["derived_from"] += [c for c in m["derived_from"] if c not in meta["derived_from"]]
        if all("stats" in m for m in metas):
            meta["stats"] = {"shard_samples": [c for m in metas for c in m["stats"]["shard_samples"]]}
            if all("shard_bytes" in m["stats"] for m in metas):
                meta["stats"]["shard_bytes"] = [b for m in metas for b in m["stats"]["shard_bytes"]]
        if any("manifests" in m for m in metas):
            meta["manifests"] = [u for m in metas for u in m.get("manifests", [])]
        if opener is None:
            openers = [d._opener for d in parts]
            opener = openers[0] if all(o is openers[0] for o in openers) else _PerShardOpener(parts)
        urls = [u for d in parts for u in d._shards]
        return type(parts[0])(urls, metadata=meta, opener=opener)

    def as_type(self, sample_type: type[Any]) -> "Dataset[Any]":
        """This dataset read as ``sample_type``, as atdata's ``as_type``.

        From ``DictSample`` (or an untyped dataset), or to a type with exactly the same
        fields (a schema-decoded class and your own), the payloads are simply decoded as
        ``sample_type``. Otherwise the samples go through a lens (:mod:`atdata_dagster.lenses`):
        a chain of registered ``@lens`` functions, or a structural lens when
        ``sample_type``'s fields are a subset of this type's. Raises
        :class:`~atdata_dagster.errors.LensNotFoundError` (a ``ValueError``) when there is none.
        """
        own = self.sample_type
        same_fields = _field_names(own) is not None and _field_names(own) == _field_names(sample_type)
        lens_obj = None
        if own not in (None, DictSample, sample_type) and not same_fields:
            lens_obj = LensNetwork().transform(own, sample_type)
        ds = Dataset[sample_type](self._shards, metadata=self._metadata, opener=self._opener, cid=self.cid,  # type: ignore[valid-type]
                                  metadata_url=self.metadata_url)
        ds.url, ds.urls_as_given = self.url, list(self.urls_as_given)
        if lens_obj is not None:
            ds._base = self  # read as this dataset (its own filters and maps included), then the lens
            ds._steps = (("map", lens_obj.get),)
        elif self._steps:
            raise ConfigurationError(
                f"{self!r} has filter()/map() steps; as_type() to {sample_type.__name__} re-decodes the shards and "
                "would drop them: call as_type() first, then filter()/map()"
            )
        return ds

    # -------------------------------------------------------------- reading
    def _open(self, url: str) -> BinaryIO:
        try:
            return self.opener(url)
        except FileNotFoundError as exc:
            raise ShardNotFoundError(
                f"shard {url} does not exist (moved, deleted or garbage-collected?); "
                "check the dataset's URLs or re-materialize it"
            ) from exc
        except OSError as exc:
            raise ShardError(f"cannot open shard {url}: {exc}") from exc

    @property
    def is_transformed(self) -> bool:
        """Whether reads pass through :meth:`filter` / :meth:`map` steps or a lens (:meth:`as_type`),
        so the samples are not simply the shards' payloads."""
        return bool(self._steps) or self._base is not None

    def iter_raw(self, shards: Iterable[str] | None = None) -> Iterator[tuple[str, bytes]]:
        """Yield ``(key, msgpack payload)`` for every sample, shard by shard, undecoded.

        For a transformed dataset (:attr:`is_transformed`) the payloads are those of the
        samples it yields (filtered, mapped, through its lens), so copying or counting it
        (``insert_dataset``, ``write_shards``) gets what iterating it gets.
        """
        if self.is_transformed:
            yield from self._transformed_raw(shards)
            return
        for url in self._shards if shards is None else shards:
            with closing(self._open(url)) as f:
                yield from iter_samples(f, url)

    def _transformed_raw(self, shards: Iterable[str] | None) -> Iterator[tuple[str, bytes]]:
        base = self._plain()
        decode = base._decoder()
        for url in self._shards if shards is None else shards:
            for key, payload in base.iter_raw(shards=[url]):
                keep, value = self._apply(decode(url, key, payload))
                if not keep:
                    continue
                if self.sample_type is not None and type(value) is not self.sample_type:
                    raise ConfigurationError(
                        f"{self!r}: a map() step turned samples into {type(value).__name__}, not "
                        f"{getattr(self.sample_type, '__name__', self.sample_type)}, so they cannot be written as this "
                        "dataset; change sample types with a lens and as_type() instead"
                    )
                yield key, value.packed

    def _decoder(self, fields: Sequence[str] | None = None) -> Callable[[str, str, bytes], Any]:
        fields = self.columns if fields is None else fields
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

    def _sources(self, shards: Iterable[str]) -> Iterator[tuple[Iterator[Any], Callable[[int], str], str]]:
        """Per shard: (its payloads in order, position -> sample key, URL).

        A local shard is memory-mapped and indexed in one pass over its headers
        (payloads are zero-copy views); any other stream goes through the streaming
        parser, so remote shards are never held in memory whole.
        """
        for url in shards:
            with closing(self._open(url)) as f:
                index = open_index(f, url)
                if index is not None:
                    yield iter_payload_views(index), _keys_of(index), url
                    continue
                keys: list[str] = []
                yield _streamed(iter_samples(f, url), keys), keys.__getitem__, url

    def _payload_decoder(self, fields: Sequence[str] | None) -> Callable[[Any], Any]:
        """``payload -> sample``: ``T.from_bytes``, or only ``fields`` decoded (the rest ``None``)."""
        st = self._require_type()
        fields = self.columns if fields is None else fields
        return st.from_bytes if fields is None else _projection(st, fields)

    def _samples(self, shards: Iterable[str], fields: Sequence[str] | None = None) -> Iterator[Any]:
        st = self._require_type()
        from_bytes = self._payload_decoder(fields)
        for payloads, key_of, url in self._sources(shards):
            # reader errors (a truncated shard) propagate as they are; decode errors
            # (DecodeError is a ShardError too) are named with the shard, key and type
            for i, payload in enumerate(payloads):
                try:
                    sample = from_bytes(payload)
                except Exception as exc:
                    raise _decode_error(st, url, key_of(i), exc) from exc
                yield sample

    def _batch_decoder(self, fields: Sequence[str] | None) -> tuple[BatchDecoder | None, Callable[[Any], Any]]:
        """(columns decoder or None, per-sample decoder) for batches; projections go sample by sample."""
        st = self._require_type()
        fields = self.columns if fields is None else fields
        return (BatchDecoder.for_type(st) if fields is None else None), self._payload_decoder(fields)

    def _decode_batch(
        self, decoders: tuple[BatchDecoder | None, Callable[[Any], Any]], payloads: list[Any],
        where: Callable[[int], tuple[str, str]],
    ) -> SampleBatch[T]:
        """One batch: columns straight from the payloads, else sample by sample (same values or the error)."""
        st = self._require_type()
        dec, from_bytes = decoders
        if dec is not None:
            columns = dec.decode(payloads)
            if columns is not None:
                return SampleBatch.from_columns(columns, len(payloads), st)
        samples = []
        for payload in payloads:
            try:
                samples.append(from_bytes(payload))
            except Exception as exc:
                url, key = where(len(samples))
                raise _decode_error(st, url, key, exc) from exc
        return SampleBatch(samples, st)

    def _ordered_batches(
        self, shards: Iterable[str], batch_size: int, fields: Sequence[str] | None = None
    ) -> Iterator[SampleBatch[T]]:
        _check_batch_size(batch_size)
        dec = self._batch_decoder(fields)
        pending: list[Any] = []
        spans: list[tuple[int, str, Callable[[int], str], int]] = []  # (first pending pos, url, key_of, first i)

        def where(pos: int) -> tuple[str, str]:
            start, url, key_of, first = max((sp for sp in spans if sp[0] <= pos), key=lambda sp: sp[0])
            return url, key_of(first + pos - start)

        for payloads, key_of, url in self._sources(shards):
            taken = 0
            while True:
                spans.append((len(pending), url, key_of, taken))
                before = len(pending)
                pending.extend(islice(payloads, batch_size - before))
                taken += len(pending) - before
                if len(pending) < batch_size:
                    if len(pending) == before:
                        spans.pop()
                    break
                yield self._decode_batch(dec, pending, where)
                pending, spans = [], []
        if pending:
            yield self._decode_batch(dec, pending, where)

    def ordered(self, batch_size: int | None = None, *, fields: Sequence[str] | None = None) -> Iterator[Any]:
        """Samples (or :class:`SampleBatch` es of ``batch_size``) in shard order.

        Batches of ``@packable`` samples are decoded straight into per-field columns
        (one preallocated array per fixed-shape ndarray field) without building sample
        objects; see :mod:`atdata_dagster.samples.batch`. ``fields=[...]`` decodes only
        the named fields; the others read as ``None``.
        """
        if fields is not None:
            _projection(self._require_type(), fields)  # unknown names fail now, not mid-epoch
        if self._steps:
            base_fields = fields if self._base is None else None  # a lens view's fields are not its source's
            return self._stepped(self._plain().ordered(fields=base_fields), batch_size)
        if batch_size is None:
            return self._samples(self._shards, fields)
        _check_batch_size(batch_size)
        return self._ordered_batches(self._shards, batch_size, fields)

    def shuffled(
        self,
        buffer_size: int | None = None,
        batch_size: int | None = None,
        seed: int | None = None,
        *,
        buffer_bytes: int | None = None,
        epoch: int = 0,
        fields: Sequence[str] | None = None,
    ) -> Iterator[Any]:
        """Samples (or batches) in random order; the same ``(seed, epoch)`` gives the same order.

        With neither ``buffer_size`` nor ``buffer_bytes`` and every shard a local file
        (at most ``GLOBAL_SHUFFLE_MAX`` samples), the order is a uniform permutation of
        all samples: shards are memory-mapped and read at random. Otherwise the shard
        order is shuffled and samples pass through a shuffle buffer holding at most
        ``buffer_size`` samples (default 10,000) and ``buffer_bytes`` payload bytes
        (default 32 MiB), so memory stays bounded whatever the sample size.
        ``fields=[...]`` decodes only the named fields (the others are ``None``).
        """
        for name, value in (("buffer_size", buffer_size), ("buffer_bytes", buffer_bytes)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if batch_size is not None:
            _check_batch_size(batch_size)
        if fields is not None:
            _projection(self._require_type(), fields)
        if self._steps:
            plain = self._plain().shuffled(buffer_size, None, seed, buffer_bytes=buffer_bytes, epoch=epoch,
                                           fields=fields if self._base is None else None)
            return self._stepped(plain, batch_size)
        rng = epoch_rng(seed, epoch)
        shards = [self._shards[i] for i in rng.permutation(len(self._shards)).tolist()]
        if batch_size is not None and buffer_size is None and buffer_bytes is None:
            indexes = self._global_indexes(shards)
            if indexes is not None:  # the fast path: a numpy permutation cut into batches of views
                return self._global_batches(indexes, rng, batch_size, fields)
        it = self._shuffled_payloads(buffer_size, buffer_bytes, rng, shards)
        if batch_size is None:
            return self._decode_tagged(it, fields)
        return self._shuffled_batches(it, batch_size, fields)

    def _global_indexes(self, shards: Sequence[str]) -> list[ShardIndex] | None:
        """Every shard memory-mapped and indexed, when all are local and few enough samples for a global shuffle."""
        indexes: list[ShardIndex] = []
        for url in shards:
            with closing(self._open(url)) as f:
                index = open_index(f, url)
            if index is None:
                return None
            indexes.append(index)
        return indexes if sum(len(ix) for ix in indexes) <= GLOBAL_SHUFFLE_MAX else None

    def _global_batches(
        self, indexes: list[ShardIndex], rng: Any, batch_size: int, fields: Sequence[str] | None,
    ) -> Iterator[SampleBatch[T]]:
        dec = self._batch_decoder(fields)
        views = [memoryview(ix.buffer) for ix in indexes]
        starts = [ix.offsets.tolist() for ix in indexes]
        ends = [(ix.offsets + ix.sizes).tolist() for ix in indexes]
        for shard_ids, local in global_batches(indexes, rng, batch_size):
            payloads = [views[s][starts[s][i] : ends[s][i]] for s, i in zip(shard_ids, local)]

            def where(pos: int, shard_ids: list[int] = shard_ids, local: list[int] = local) -> tuple[str, str]:
                ix = indexes[shard_ids[pos]]
                return ix.url, sample_key(ix, local[pos])

            yield self._decode_batch(dec, payloads, where)

    def _shuffled_payloads(
        self, buffer_size: int | None, buffer_bytes: int | None, rng: Any, shards: list[str]
    ) -> Iterator[tuple[Any, tuple[str, Callable[[int], str], int]]]:
        """(payload, (url, key_of, position)) of every sample, shuffled."""
        if buffer_size is None and buffer_bytes is None:
            indexes = self._global_indexes(shards)
            if indexes is not None:
                yield from _global_payloads(indexes, rng)
                return
        buffer = ShuffleBuffer(
            rng,
            max_bytes=buffer_bytes or DEFAULT_BUFFER_BYTES,
            max_items=buffer_size or 10_000,
        )
        yield from buffer.shuffle(self._tagged(shards))

    def _tagged(self, shards: Iterable[str]) -> Iterator[tuple[Any, tuple[str, Callable[[int], str], int]]]:
        for payloads, key_of, url in self._sources(shards):
            for i, payload in enumerate(payloads):
                yield payload, (url, key_of, i)

    def _decode_tagged(
        self, it: Iterator[tuple[Any, tuple[str, Callable[[int], str], int]]], fields: Sequence[str] | None = None
    ) -> Iterator[Any]:
        st = self._require_type()
        from_bytes = self._payload_decoder(fields)
        for payload, (url, key_of, i) in it:
            try:
                sample = from_bytes(payload)
            except Exception as exc:
                raise _decode_error(st, url, key_of(i), exc) from exc
            yield sample

    def _shuffled_batches(
        self, it: Iterator[tuple[Any, Any]], batch_size: int, fields: Sequence[str] | None = None
    ) -> Iterator[SampleBatch[T]]:
        dec = self._batch_decoder(fields)
        while True:
            chunk = list(islice(it, batch_size))
            if not chunk:
                return
            payloads = [p for p, _ in chunk]

            def where(pos: int, chunk: list = chunk) -> tuple[str, str]:
                url, key_of, i = chunk[pos][1]
                return url, key_of(i)

            yield self._decode_batch(dec, payloads, where)

    def __iter__(self) -> Iterator[T]:
        return self.ordered()

    def head(self, n: int = 5) -> list[T]:
        """The first ``n`` samples (reads only as much as needed)."""
        it = self.ordered()
        try:
            return list(islice(it, n))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    def count(self) -> int:
        """Number of samples (streams every shard; nothing is decoded unless a :meth:`filter` must see them)."""
        if self._filtered():
            return sum(1 for _ in self)
        return sum(1 for _ in self.iter_raw())

    # -------------------------------------------------------------- atdata conveniences
    def _plain(self) -> "Dataset[Any]":
        """What this dataset's steps apply to: the source dataset of a lens view, else itself without steps."""
        if self._base is not None:
            return self._base
        ds = copy.copy(self)
        ds._steps = ()
        return ds

    def _with_step(self, kind: str, fn: Callable[[Any], Any]) -> "Dataset[Any]":
        if not callable(fn):
            raise ConfigurationTypeError(f"Dataset.{kind}() takes a function of one sample, got {type(fn).__name__}")
        ds = copy.copy(self)
        ds._steps = self._steps + ((kind, fn),)
        ds._cum, ds._key_map = None, None  # counts change with a filter
        return ds

    def _apply(self, sample: Any) -> tuple[bool, Any]:
        for kind, fn in self._steps:
            if kind == "filter":
                if not fn(sample):
                    return False, None
            else:
                sample = fn(sample)
        return True, sample

    def _stepped(self, samples: Iterator[Any], batch_size: int | None) -> Iterator[Any]:
        out = (value for keep, value in map(self._apply, samples) if keep)
        if batch_size is None:
            return out
        _check_batch_size(batch_size)
        return (SampleBatch(chunk) for chunk in iter(lambda: list(islice(out, batch_size)), []))

    def filter(self, predicate: Callable[[T], bool]) -> "Dataset[T]":
        """A dataset that yields only the samples for which ``predicate(sample)`` is true.

        Lazy, as atdata's: nothing is read now; every read (iteration, :meth:`ordered`,
        :meth:`shuffled`, :meth:`head`, ``len``, :meth:`select`) applies it. Chains with
        other filters and maps in order.
        """
        return self._with_step("filter", predicate)

    def map(self, fn: Callable[[T], Any]) -> "Dataset[Any]":
        """A dataset that yields ``fn(sample)`` for each sample (lazily, as atdata's)."""
        return self._with_step("map", fn)

    def select(self, indices: Sequence[int]) -> list[T]:
        """The samples at positions ``indices`` (in the order given), as atdata's ``select``.

        Uses random access (``ds[i]``: one sample's bytes each) where the dataset has it,
        else one ordered pass that stops at the largest index. Raises ``IndexError``
        naming the missing positions.
        """
        wanted = [int(i) for i in indices]
        if not wanted:
            return []
        if not self._filtered():
            try:
                n = len(self)
            except TypeError:
                n = None
            if n is not None:
                missing = [i for i in wanted if not -n <= i < n]
                if missing:
                    raise IndexError(f"Indices {missing} not found in dataset (dataset has {n} samples)")
                return [self[i] for i in wanted]
        target, last, found = set(wanted), max(wanted), {}
        seen = 0
        for seen, sample in enumerate(self.ordered()):
            if seen in target:
                found[seen] = sample
            if seen >= last:
                break
        missing = [i for i in wanted if i not in found]
        if missing:
            raise IndexError(f"Indices {missing} not found in dataset (dataset has {seen + 1 if found else 0}+ samples)")
        return [found[i] for i in wanted]

    def process_shards(
        self,
        fn: Callable[[list[T]], Any],
        *,
        shards: Sequence[str] | None = None,
        checkpoint: str | os.PathLike | None = None,
        on_shard_error: Callable[[str, Exception], None] | None = None,
    ) -> dict[str, Any]:
        """Call ``fn(samples of one shard)`` for each shard; return shard URL -> result (atdata's API).

        A failing shard does not stop the others: at the end
        :class:`~atdata_dagster.errors.PartialFailureError` carries what succeeded, what
        failed and why (``on_shard_error(url, exc)`` is also called as each fails).
        ``shards`` limits the run to those URLs (e.g. ``err.failed_shards``).
        ``checkpoint`` (a file) makes it resumable: each shard that succeeded is appended
        (and fsynced) as it finishes, skipped by the next run, and the file is removed once
        every shard has succeeded. Shards are read with this dataset's opener, filters and
        maps (atdata re-opens bare URLs, losing credentials). One shard's samples are in
        memory at a time.
        """
        todo = list(self._shards) if shards is None else [str(u) for u in shards]
        unknown = sorted(set(todo) - set(self._shards))
        if unknown:
            raise ValueError(f"process_shards: {len(unknown)} shard(s) are not in {self!r} (first: {unknown[0]})")
        done: set[str] = set()
        path = Path(checkpoint) if checkpoint is not None else None
        if path is not None and path.exists():
            done = set(path.read_text(encoding="utf-8").splitlines())
        results: dict[str, Any] = {}
        errors: dict[str, Exception] = {}
        succeeded: list[str] = []
        for url in todo:
            if url in done:
                continue
            try:
                part = self.select_shards([url])
                part._steps = self._steps
                part._base = self._base.select_shards([url]) if self._base is not None else None
                results[url] = fn(list(part))
            except Exception as exc:  # noqa: BLE001 - each shard's failure is collected and reported together
                errors[url] = exc
                if on_shard_error is not None:
                    on_shard_error(url, exc)
                continue
            succeeded.append(url)
            if path is not None:
                with open(path, "a", encoding="utf-8") as f:
                    f.write(url + "\n")
                    f.flush()
                    os.fsync(f.fileno())
        if errors:
            raise PartialFailureError(succeeded, list(errors), errors, results)
        if path is not None and path.exists():
            path.unlink()
        return results

    @property
    def fields(self) -> Any:
        """atdata's query DSL: ``Q = ds.fields; ds.query(Q.confidence > 0.9)`` (``pyarrow`` expressions)."""
        return query_fields(self.sample_type)

    def query(self, where: Callable[[Any], Any] | Any) -> list[Any]:
        """Samples matching ``where`` by their manifest fields, without reading the shards (atdata's).

        ``where`` is a function of a pandas DataFrame returning a boolean Series, or a
        ``pyarrow.compute`` expression; returns :class:`~atdata_dagster.shards.query.SampleLocation`
        (shard, key, offset) for each match. Needs shards written with ``manifest=True``;
        ``ds.get(loc.key)`` reads one. See :class:`~atdata_dagster.shards.query.QueryExecutor`.
        """
        executor = QueryExecutor.from_shard_urls(self._shards, opener=self.opener)
        if not executor.manifests:
            raise FileNotFoundError(f"no manifests next to the shards of {self!r}; write them with manifest=True")
        return executor.query(where)

    @property
    def shards(self) -> Iterator[str]:
        """The shard URLs, lazily (atdata's property; :meth:`list_shards` gives a list)."""
        return iter(self._shards)

    @property
    def batch_type(self) -> Any:
        """``SampleBatch[T]`` for this dataset's sample type."""
        return SampleBatch[self.sample_type]  # type: ignore[name-defined]

    @property
    def schema(self) -> dict[str, Any]:
        """Field name -> annotation of the sample type (``{"_data": dict}`` for ``DictSample``, as atdata)."""
        st = self.sample_type
        if st is DictSample:
            return {"_data": dict}
        if st is not None and dataclasses.is_dataclass(st):
            hints = typing.get_type_hints(st) if not isinstance(st, str) else {}
            return {f.name: hints.get(f.name, f.type) for f in dataclasses.fields(st)}
        return {}

    @property
    def column_names(self) -> list[str]:
        """Field names of the sample type, in order."""
        st = self.sample_type
        return [f.name for f in dataclasses.fields(st)] if st is not None and dataclasses.is_dataclass(st) else []

    def describe(self) -> dict[str, Any]:
        """Summary: sample type name, fields, shard count, shards, URL and metadata (atdata's keys)."""
        shards = self.list_shards()
        return {
            "sample_type": getattr(self.sample_type, "__name__", None),
            "fields": self.schema,
            "num_shards": len(shards),
            "shards": shards,
            "url": self.url,
            "metadata": self.metadata,
        }

    def wrap(self, sample: Mapping[str, Any]) -> T:
        """A raw WebDataset sample dict (``{"__key__": ..., "msgpack": bytes}``) decoded as ``T``."""
        if "msgpack" not in sample:
            raise ValueError(f"Sample missing 'msgpack' key, got keys: {list(sample.keys())}")
        payload = sample["msgpack"]
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise ValueError(f"Expected sample['msgpack'] to be bytes, got {type(payload).__name__}")
        return self._payload_decoder(self.columns)(bytes(payload))

    def wrap_batch(self, batch: Mapping[str, Any]) -> SampleBatch[T]:
        """A raw WebDataset batch dict (``{"msgpack": [bytes, ...]}``) decoded as ``SampleBatch[T]``."""
        if "msgpack" not in batch:
            raise ValueError(f"Batch missing 'msgpack' key, got keys: {list(batch.keys())}")
        decode = self._payload_decoder(self.columns)
        return SampleBatch([decode(bytes(b)) for b in batch["msgpack"]], sample_type=self.sample_type)

    def to_dict(self, limit: int | None = None) -> dict[str, list[Any]]:
        """Field -> list of values for the first ``limit`` samples (all when ``None``: the whole dataset in memory)."""
        samples: list[Any] = self.head(limit) if limit is not None else list(self)
        if not samples:
            return {}
        first = samples[0]
        if dataclasses.is_dataclass(first):
            names = [f.name for f in dataclasses.fields(first)]
            return {n: [getattr(s, n) for s in samples] for n in names}
        keys = list(first.keys())
        return {k: [s[k] for s in samples] for k in keys}

    def to_pandas(self, limit: int | None = None) -> Any:
        """A ``pandas.DataFrame`` of the first ``limit`` samples (all when ``None``), one column per field.

        Needs pandas (``pip install pandas``); ndarray fields become object columns of arrays.
        """
        try:
            import pandas as pd  # lazy: pandas is optional, only this method needs it
        except ImportError:
            raise ImportError("Dataset.to_pandas() needs pandas: pip install pandas "
                              "(or use to_dict() / to_parquet(), which do not)") from None
        return pd.DataFrame(self.to_dict(limit))

    def to_parquet(self, path: str | os.PathLike, sample_map: Callable[[T], dict] | None = None,
                   maxcount: int | None = None, **kwargs: Any) -> list[str]:
        """Write the samples to Parquet with pyarrow (no pandas needed); return the files written.

        Streams: at most ``maxcount`` samples are held at once; the files are then named
        ``{stem}-{segment:06d}{suffix}``, as atdata names them. Without ``maxcount`` one file
        holds everything (the whole dataset in memory, as atdata). ``sample_map`` turns a
        sample into a row dict (default: its fields); ndarray values become (nested) lists.
        ``kwargs`` go to ``pyarrow.parquet.write_table``.
        """
        import pyarrow as pa  # lazy: pyarrow is only needed when exporting
        import pyarrow.parquet as pq  # lazy: as above

        if maxcount is not None and (not isinstance(maxcount, int) or maxcount < 1):
            raise ValueError(f"maxcount must be a positive integer, got {maxcount!r}")
        to_row = sample_map or _sample_row
        path = Path(path)
        written: list[str] = []

        def flush(rows: list[dict], target: Path) -> None:
            table = pa.Table.from_pylist([{k: _parquet_value(v) for k, v in r.items()} for r in rows])
            pq.write_table(table, str(target), **kwargs)
            written.append(str(target))

        rows: list[dict] = []
        for sample in self:
            rows.append(to_row(sample))
            if maxcount is not None and len(rows) >= maxcount:
                flush(rows, path.with_name(f"{path.stem}-{len(written):06d}{path.suffix}"))
                rows = []
        if maxcount is None:
            flush(rows, path)
        elif rows:
            flush(rows, path.with_name(f"{path.stem}-{len(written):06d}{path.suffix}"))
        return written

    # -------------------------------------------------------------- sizes, random access
    def __bool__(self) -> bool:
        return True  # a Dataset always names shards; never fall back to len() for truth

    def __len__(self) -> int:
        """The number of samples: the index entry's per-shard counts, else the manifests,
        else (bare shard URLs, as atdata does) a scan of each shard's tar headers, done once.

        The scan reads headers only (payloads are skipped with a seek on local files); a
        remote shard without a manifest is streamed once to count it.
        """
        if self._filtered():  # as atdata: count what the filter lets through (once)
            if self._cum is None:
                self._cum = [0, sum(1 for _ in self)]
            return self._cum[-1]
        return self._cumulative()[-1]

    def _filtered(self) -> bool:
        return any(kind == "filter" for kind, _ in self._steps)

    def _shard_counts(self) -> list[int]:
        try:
            return [spec.num_samples for spec in self.shard_specs()]
        except TypeError:  # counts recorded nowhere: scan the headers (cached per shard)
            return [len(self.shard_offsets(s).keys) for s in range(len(self._shards))]

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
            stats_field = meta.get("stats")
            stats = stats_field if isinstance(stats_field, dict) else {}
            n = len(self._shards)
            counts, sizes = stats.get("shard_samples"), stats.get("shard_bytes")
            if not _ints(counts, n):  # absent or malformed: the manifests may still know
                counts = self._manifest_counts()
            if not _ints(sizes, n):
                sizes = [None] * n
            assert isinstance(counts, list) and isinstance(sizes, list)
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
                header_field = manifest.get("header")
                header = header_field if isinstance(header_field, dict) else manifest
                n = header.get("num_samples")
                if not isinstance(n, int) or isinstance(n, bool) or n < 0:
                    raise ValueError(f"num_samples {n!r}")
                counts.append(n)
            except Exception:  # noqa: BLE001 - any failure to read a manifest means len() is unknown; reported as TypeError
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
        cum = self._cum
        if cum is None:  # computed once: ds[i] looks it up on every call
            cum = [0]
            for n in self._shard_counts():
                cum.append(cum[-1] + n)
            self._cum = cum
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
        except Exception:  # noqa: BLE001 - an absent or unreadable sidecar only means scanning the headers instead
            got = None
        if got is None:
            with closing(self._open(url)) as f:
                got = scan_offsets(f, url)
        self._offsets[shard] = got
        return got

    def _mapped_index(self, shard: int) -> ShardIndex | None:
        """Shard ``shard`` memory-mapped and indexed (once), when it is a plain local file."""
        if shard not in self._mapped:
            url = self._shards[shard]
            if not is_local_url(url):  # opening a remote shard would start a download (S3: a GET)
                self._mapped[shard] = None
            else:
                with closing(self._open(url)) as f:
                    self._mapped[shard] = open_index(f, url)
        return self._mapped[shard]

    def _sample_in_shard(self, shard: int, i: int, key: str | None = None) -> Any:
        url = self._shards[shard]
        if key is None:
            index = self._mapped_index(shard)
            if index is not None and i < len(index):  # a payload slice of the map: no open, no seek
                payload = index.payload(i)
                try:
                    return self._payload_decoder(None)(payload)
                except Exception as exc:
                    raise _decode_error(self._require_type(), url, sample_key(index, i), exc) from exc
        offsets = self.shard_offsets(shard)
        start, stop = offsets.span(i)
        end = None if stop < 0 else stop
        read_range = getattr(self.opener, "read_range", None)
        span: bytes
        if read_range is not None and not is_local_url(url):
            span = read_range(url, start, end)  # S3: one ranged GET
        else:
            with closing(self._open(url)) as f:
                span = read_span(f, start, end)  # a seek, for local files
        data = span + bytes(1024)  # an end-of-archive marker after the sample
        k, found = sample_at(data, url, key if key is not None else offsets.keys[i])
        return self._decoder()(url, k, found)

    def __getitem__(self, i: int) -> T:
        """The ``i``-th sample in :meth:`ordered` order (negative indices count from the end).

        Uses per-shard sample offsets (manifest sidecar, else a header-only scan done once
        per shard and cached), so each lookup reads only that sample's bytes.
        """
        if not isinstance(i, (int, np.integer)) or isinstance(i, bool):
            raise TypeError(f"dataset indices must be integers, got {type(i).__name__}")
        if self._filtered():
            raise TypeError(f"{self!r} is filtered, so it has no random access; use select([...]) (one pass) "
                            "or iterate it")
        if self._steps:
            return self._apply(self._plain()[i])[1]
        cum = self._cumulative()
        n = cum[-1]
        i = int(i)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"sample index {i} is out of range for a dataset of {n} samples")
        shard, j = locate(cum, i)
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
        sample = self._base.get(key) if self._base is not None else self._sample_in_shard(where[0], where[1], key)
        if self._steps:
            keep, sample = self._apply(sample)
            if not keep:
                raise NotFoundError(f"sample {key!r} of {self!r} is filtered out")
        return sample

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
        if self._steps:
            raise ConfigurationError(
                f"{self!r} has filter()/map() steps, which torch() does not apply: its exactly-once plan splits "
                "recorded per-shard sample counts across ranks and workers, and a filter changes them unseen. "
                "Apply the function in your training loop or collate_fn, or write the filtered dataset first "
                "(index.write_samples(ds, name=...)) and train on that"
            )
        from .loader_torch import TorchDataset  # lazy: torch is an optional extra, imported only when asked for

        return TorchDataset(
            self, shuffle=shuffle, seed=seed, batch_size=batch_size, rank=rank, world_size=world_size,
            drop_last=drop_last, verify=verify, fields=fields, shuffle_buffer_bytes=shuffle_buffer_bytes,
            cache_dir=cache_dir, cache_limit_bytes=cache_limit_bytes,
        )


class _PerShardOpener:
    """Opens each shard with the opener of the dataset it came from (:meth:`Dataset.concat`); picklable."""

    def __init__(self, parts: Sequence[Dataset[Any]]):
        self.routes: dict[str, Any] = {}
        for d in parts:
            for u in d.list_shards():
                self.routes.setdefault(u, d.opener)

    def __call__(self, url: str) -> BinaryIO:
        opener = self.routes.get(url)
        if opener is None:
            opener = default_opener()
        return opener(url)

    def read_range(self, url: str, start: int, stop: int | None) -> bytes:
        """Bytes ``[start, stop)`` of ``url``, ranged through the shard's own opener where it can be."""
        opener = self.routes.get(url) or default_opener()
        ranged = getattr(opener, "read_range", None)
        if ranged is not None:
            return ranged(url, start, stop)
        with closing(opener(url)) as f:
            return read_span(f, start, stop)


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
    except Exception:  # noqa: BLE001 - a sample type without a field plan (DictSample, duck-typed) decodes by payload keys
        plan = None
    if plan is None:
        from_data = st.from_data  # type: ignore[attr-defined]  # DictSample / duck-typed samples

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
        obj: Any = st.__new__(st)  # type: ignore[call-overload]  # st is a sample class, not a metaclass
        for name, convert, keep in decoders:
            value = data.get(name) if keep else None
            if convert is not None and value is not None:
                value = convert(value)
            object.__setattr__(obj, name, value)
        return obj

    return project


def _field_names(t: Any) -> list[str] | None:
    return [f.name for f in dataclasses.fields(t)] if isinstance(t, type) and dataclasses.is_dataclass(t) else None


def _sample_row(sample: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(sample) and not isinstance(sample, type):
        return {f.name: getattr(sample, f.name) for f in dataclasses.fields(sample)}
    return dict(sample.to_dict())


def _parquet_value(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _check_batch_size(batch_size: Any) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")


def _streamed(samples: Iterator[tuple[str, bytes]], keys: list[str]) -> Iterator[bytes]:
    for key, payload in samples:
        keys.append(key)
        yield payload


def _keys_of(index: ShardIndex) -> Callable[[int], str]:
    return lambda i: sample_key(index, i)


def _global_payloads(indexes: list[ShardIndex], rng: Any) -> Iterator[tuple[Any, tuple[str, Callable[[int], str], int]]]:
    views = [memoryview(ix.buffer) for ix in indexes]
    offsets = [ix.offsets.tolist() for ix in indexes]
    ends = [(ix.offsets + ix.sizes).tolist() for ix in indexes]
    keys = [_keys_of(ix) for ix in indexes]
    for s, i in global_order(indexes, rng):
        yield views[s][offsets[s][i] : ends[s][i]], (indexes[s].url, keys[s], i)


def _decode_error(st: type, url: str, key: str, exc: Exception) -> ShardError:
    # a payload that is not a map, or whose fields do not fit the type, is a TypeError in
    # atdata too (``cls(**payload)``): keep that, so ``except TypeError`` still catches it
    return (PayloadTypeError if isinstance(exc, TypeError) else ShardError)(
        f"shard {url}: sample {key!r} does not decode as {st.__name__}: {exc}. "
        "Read it as Dataset[DictSample] to see its fields, or use the sample type it "
        "was written with (index.get_schema_type(entry.schema_ref))"
    )


def _specialize(sample_type: type) -> type:
    return Dataset[sample_type]  # type: ignore[valid-type]


def _reduce_dataset_class(cls: type) -> Any:
    st = cls.__dict__.get("sample_type")
    if st is not None and _specialized.get(st) is cls:
        return _specialize, (st,)
    return cls.__qualname__  # importable class: pickled by reference


copyreg.pickle(_DatasetMeta, _reduce_dataset_class)


def _rebuild(cls: type, shards: list[str], url: str, metadata: dict | None, opener: Any,
             cid: str | None = None, columns: tuple[str, ...] | None = None,
             urls_as_given: list[str] | None = None, metadata_url: str | None = None,
             steps: tuple = (), base: Dataset | None = None) -> Dataset:
    # ``cls`` itself pickles as ``Dataset[T]`` (see _reduce_dataset_class)
    ds = cls(shards, metadata=metadata, opener=opener, cid=cid, metadata_url=metadata_url)
    ds._steps, ds._base = steps, base
    ds.url = url
    ds.columns = columns
    if isinstance(opener, SourceOpener):
        ds.source = opener.source
    if urls_as_given is not None:
        ds.urls_as_given = urls_as_given
    return ds


# ------------------------------------------------------------------ write_samples

_MAX_METADATA_BYTES = 16 << 20

_NUMBERED_NAME = re.compile(r"%0?[0-9]*d")


def write_samples(
    samples: Iterable[Any],
    path: str | os.PathLike,
    *,
    maxcount: int | None = None,
    maxsize: int | None = None,
    manifest: bool = False,
) -> "Dataset":
    """atdata-compatible: write samples to tar file(s) at ``path``; return a :class:`Dataset`.

    Without limits one tar is written at ``path`` exactly. With ``maxcount`` or
    ``maxsize`` shards are written to ``<parent>/<stem>-%06d<suffix>`` (``out.tar`` ->
    ``out-000000.tar``, ...), or to ``path`` itself if its file name has a ``%d``
    pattern (a ``%`` in a folder name is just a character). Each file is written to a
    temp name and renamed into place when complete. The returned dataset's ``url`` is
    the absolute path, or a brace list for several shards.
    """
    raw = os.fspath(path)
    p = Path(raw).expanduser()
    # Only a %d conversion in the file name makes a pattern; a '%' in a folder name is literal.
    folder = str(p.parent.resolve()).replace("%", "%%")
    if _NUMBERED_NAME.search(p.name):
        pattern, numbered = os.path.join(folder, p.name), True
    elif maxcount is None and maxsize is None:
        pattern, numbered = str(p.parent.resolve() / p.name), False
    else:
        pattern, numbered = os.path.join(folder, f"{p.stem.replace('%', '%%')}-%06d{p.suffix.replace('%', '%%')}"), True
    store = PathStore(pattern, numbered)
    with ShardWriter(store, "", maxcount=maxcount, maxsize=maxsize, manifest=manifest) as writer:
        result = write_all(writer, samples, where=f"to {raw!r}")
    sample_type = writer.sample_type
    ds_cls = Dataset[sample_type] if sample_type is not None else Dataset  # type: ignore[valid-type]
    return ds_cls(brace_list(list(result)))
