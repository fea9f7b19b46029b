"""Exactly-once, resumable, verified sample streams for training (no torch import here).

:meth:`Dataset.torch() <atdata_dagster.dataset.Dataset.torch>` wraps a :class:`Loader` in a
``torch.utils.data.IterableDataset`` (:mod:`atdata_dagster.loader_torch`); everything that
decides *which* sample goes *where* lives here, in plain Python, so it is the same in the
main process, in every DataLoader worker and on every machine.

The plan, per epoch
-------------------
1. **Units.** Each shard is a unit (``shard, first sample, end``); when shards are too few
   for the ranks (fewer than ``UNITS_PER_RANK * world_size``), shards are cut into sample
   ranges, read by seeking to per-sample offsets. With ``shuffle=True`` the unit order is
   a permutation drawn from ``(seed, epoch)``: the **epoch order** ``E`` (``N`` samples).
2. **Ranks.** Rank ``r`` owns the contiguous positions ``[r*L, (r+1)*L)`` of ``E``, with
   ``L = N // world_size`` (``drop_last=True``: the remainder is dropped) or
   ``ceil(N / world_size)`` (``drop_last=False``: positions past ``N`` wrap to the start,
   so fewer than ``world_size`` samples are repeated). Every rank has exactly ``L``
   samples, so DDP never waits on a rank that ran out. A rank's positions are numbered
   ``q = 0 .. L-1``: its **canonical sequence**, which does not depend on workers.
3. **Workers.** The rank's *remaining* positions (all of them, unless resuming) are cut
   into ``num_workers`` contiguous parts of equal length (±1 block; a block is
   ``batch_size`` positions when ``Dataset.torch(batch_size=...)`` batches, so only the
   rank's last batch can be short and the batch count does not depend on the worker
   count); worker ``w`` streams part ``w`` shard range by shard range. With ``shuffle=True`` each worker passes its stream
   through a shuffle buffer bounded in **bytes** (``shuffle_buffer_bytes``; sample sizes
   are the per-shard means recorded in the index, so the bound and the order are the same
   on every machine), with its own random stream seeded from
   ``(seed, epoch, rank, resume generation, worker)``.

Resume
------
A worker's state is ``(plan, worker, consumed)``: the plan (remaining positions, worker
count, generation) and how many samples that worker has *yielded*. Its output order is a
pure function of the plan (the shuffle buffer is simulated on positions, without reading
data), so the samples a worker has delivered are exactly the first ``consumed`` of that
order. ``StatefulDataLoader`` snapshots each worker's state together with the batch it
produced and keeps the snapshot of the last batch *handed to the user*, so prefetched
batches are not counted.

- Same worker count (``StatefulDataLoader.load_state_dict``): each worker gets its own
  state back, replays its order on positions and skips the first ``consumed``: the stream
  continues exactly as if never stopped.
- Any other worker count (``TorchDataset.load_state_dict(loader.state_dict())`` on the
  dataset, then a new loader): the states of all workers are merged into the set of
  positions not yet delivered, which becomes the next plan (generation + 1) cut into the
  new number of parts. Nothing is repeated, nothing lost; the order of the rest differs.

The state names the dataset's CID (or, for datasets not from an index, a fingerprint of
its shard URLs and checksums); loading it onto other data raises
:class:`~atdata_dagster.errors.LoaderStateError`.

Verified reads
--------------
With ``verify=True`` a shard whose SHA-256 is recorded (index entries record every
shard's) is hashed in full before any of its samples is yielded; a mismatch raises
:class:`~atdata_dagster.errors.ChecksumMismatchError` naming the shard. Local shards are
hashed once per loader and process (keyed by path, size and mtime); remote shards are verified as
they enter the :class:`~atdata_dagster.shards.cache.ShardCache` (``cache_dir``) or, without
a cache, while they are spooled to a temporary file (memory up to 64 MiB, then disk). The
next shard is verified (or downloaded) on a background thread while the current one is
decoded.
"""

from __future__ import annotations

import hashlib
import json
from array import array
import os
import random
import tempfile
from bisect import bisect_right
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Iterator, Sequence

from .errors import ChecksumMismatchError, LoaderStateError, ShardError, ShardNotFoundError
from .shards.cache import ShardCache, is_local_url, local_path
from .shards.fastread import open_index, sample_key
from .shards.offsets import ShardOffsets, iter_range, scan_offsets
from .shards.reader import READ_CHUNK

__all__ = [
    "Loader", "ShardSpec", "STATE_FORMAT", "UNITS_PER_RANK", "DEFAULT_SHUFFLE_BUFFER_BYTES",
    "make_state", "load_state", "merge_states", "global_state", "check_state",
]

STATE_FORMAT = "atdata-dagster/loader-state/1"
#: Shards are cut into sample ranges when there are fewer than this many per rank.
UNITS_PER_RANK = 8
#: Default byte bound of each worker's shuffle buffer.
DEFAULT_SHUFFLE_BUFFER_BYTES = 64 << 20
#: Mean sample size assumed for shards whose byte size is not recorded.
_UNKNOWN_SAMPLE_BYTES = 4096
#: Remote shards read without a cache are spooled to a temp file past this many bytes.
_SPOOL_MEMORY = 64 << 20

Interval = tuple[int, int]


@dataclass(frozen=True)
class ShardSpec:
    """What the index knows about one shard: URL, sample count, checksum and byte size."""

    url: str
    num_samples: int
    sha256: str | None = None
    nbytes: int | None = None

    @property
    def mean_sample_bytes(self) -> int:
        if self.nbytes and self.num_samples:
            return max(1, self.nbytes // self.num_samples)
        return _UNKNOWN_SAMPLE_BYTES


# ---------------------------------------------------------------- intervals


def _total(intervals: Sequence[Interval]) -> int:
    return sum(b - a for a, b in intervals)


def _slice(intervals: Sequence[Interval], start: int, stop: int) -> list[Interval]:
    """Positions ``start .. stop-1`` of the concatenation of ``intervals``, as intervals."""
    out: list[Interval] = []
    seen = 0
    for a, b in intervals:
        n = b - a
        lo, hi = max(start - seen, 0), min(stop - seen, n)
        if lo < hi:
            out.append((a + lo, a + hi))
        seen += n
        if seen >= stop:
            break
    return out


def _to_intervals(positions: Sequence[int]) -> list[Interval]:
    out: list[Interval] = []
    for q in sorted(positions):
        if out and out[-1][1] == q:
            out[-1] = (out[-1][0], q + 1)
        else:
            out.append((q, q + 1))
    return out


def _mark(bitmap: bytearray, intervals: Sequence[Interval]) -> None:
    for a, b in intervals:
        bitmap[a:b] = b"\1" * (b - a)


def _unmarked(bitmap: bytearray, intervals: Sequence[Interval]) -> list[Interval]:
    """The parts of ``intervals`` whose positions are not set in ``bitmap``."""
    out: list[Interval] = []
    for a, b in intervals:
        q = a
        while q < b:
            start = bitmap.find(0, q, b)
            if start < 0:
                break
            stop = bitmap.find(1, start, b)
            stop = b if stop < 0 else stop
            out.append((start, stop))
            q = stop
    return out


def _rng(*parts: Any) -> random.Random:
    """A random stream from ``parts``: SHA-256 of their repr, so identical on every machine."""
    digest = hashlib.sha256(repr(parts).encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:16], "big"))


# ---------------------------------------------------------------- the loader


class Loader:
    """The torch-free core of :meth:`Dataset.torch`: plan, verified reads and resume state.

    One ``Loader`` serves one rank. :meth:`iter_worker` yields ``(position, sample)`` for
    one worker of a given worker count and counts what it yields; :func:`make_state` and
    :func:`load_state` save and restore that progress (see the module docstring).
    """

    def __init__(
        self,
        dataset: Any,
        *,
        shuffle: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
        verify: bool = True,
        fields: Sequence[str] | None = None,
        shuffle_buffer_bytes: int = DEFAULT_SHUFFLE_BUFFER_BYTES,
        cache_dir: str | os.PathLike | None = None,
        cache_limit_bytes: int | None = None,
        block: int = 1,
    ):
        if not isinstance(block, int) or block < 1:
            raise ValueError(f"block must be a positive integer, got {block!r}")
        if not isinstance(world_size, int) or world_size < 1:
            raise ValueError(f"world_size must be a positive integer, got {world_size!r}")
        if not isinstance(rank, int) or not 0 <= rank < world_size:
            raise ValueError(f"rank must be an integer in [0, {world_size}), got {rank!r}")
        if not isinstance(shuffle_buffer_bytes, int) or shuffle_buffer_bytes < 0:
            raise ValueError(f"shuffle_buffer_bytes must be a non-negative integer, got {shuffle_buffer_bytes!r}")
        self.dataset = dataset
        try:
            self.specs: list[ShardSpec] = dataset.shard_specs()
        except TypeError as exc:
            raise TypeError(f"Dataset.torch() plans from per-shard sample counts: {exc}") from None
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.rank = rank
        self.world_size = world_size
        self.drop_last = bool(drop_last)
        self.verify = bool(verify)
        self.fields = None if fields is None else list(fields)
        self.shuffle_buffer_bytes = shuffle_buffer_bytes
        self.block = block
        self.cache = ShardCache(cache_dir, cache_limit_bytes) if cache_dir is not None else None
        self.identity = dataset.identity()
        self.num_samples = sum(s.num_samples for s in self.specs)
        if self.num_samples == 0:
            raise ShardError(f"dataset {dataset.url!r} holds no samples; nothing to train on")
        if self.drop_last:
            self.rank_length = self.num_samples // world_size
        else:
            self.rank_length = -(-self.num_samples // world_size)
        self.epoch = 0
        self._decode = dataset._projector(self.fields)
        self._verified: dict[Any, bool] = {}
        self._offsets: dict[int, ShardOffsets] = {}
        self._mapped: dict[int, Any] = {}  # shard -> ShardIndex of a local shard (memory map); not pickled
        self._units_cache: tuple[int, list[tuple[int, int, int]], list[int]] | None = None
        # progress of the stream running in this process (None before the first)
        self._plan: dict | None = None
        self._worker = 0
        self._consumed = 0
        # a resume waiting for the next iter_worker: ("worker", state) or ("global", plan)
        self._pending: tuple[str, dict] | None = None

    def __getstate__(self) -> dict:
        # DataLoader workers started by spawn/forkserver get a pickled copy: the decoder is
        # a closure, so it is rebuilt on the other side.
        state = dict(self.__dict__)
        state["_decode"] = None
        state["_mapped"] = {}
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._decode = self.dataset._projector(self.fields)

    # ------------------------------------------------------------ epochs
    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch``; a pending resume of another epoch is dropped."""
        if not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative integer, got {epoch!r}")
        if self._pending is not None and self._pending[1]["epoch"] != epoch:
            self._pending = None
        if epoch != self.epoch:
            self._plan = None  # state_dict() now describes the start of the new epoch
        self.epoch = epoch

    def _units(self) -> tuple[list[tuple[int, int, int]], list[int]]:
        """This epoch's units ``(shard, start, stop)`` in order, and their cumulative starts."""
        cached = self._units_cache
        if cached is not None and cached[0] == self.epoch:
            return cached[1], cached[2]
        want = UNITS_PER_RANK * self.world_size
        pieces = 1
        if len(self.specs) < want:
            pieces = -(-want // len(self.specs))
        units: list[tuple[int, int, int]] = []
        for s, spec in enumerate(self.specs):
            n = spec.num_samples
            k = max(1, min(pieces, n))
            for j in range(k):
                a, b = j * n // k, (j + 1) * n // k
                if b > a:
                    units.append((s, a, b))
        if self.shuffle:
            _rng("units", self.seed, self.epoch, self.world_size).shuffle(units)
        starts = [0]
        for _, a, b in units:
            starts.append(starts[-1] + b - a)
        self._units_cache = (self.epoch, units, starts)
        return units, starts

    def _runs(self, intervals: Sequence[Interval]) -> Iterator[tuple[int, int, int, int]]:
        """``(q, shard, start, stop)`` runs covering rank positions ``intervals``, in order."""
        units, starts = self._units()
        n = self.num_samples
        base = self.rank * self.rank_length
        for qa, qb in intervals:
            q = qa
            while q < qb:
                p = (base + q) % n
                u = bisect_right(starts, p) - 1
                shard, a, b = units[u]
                first = a + (p - starts[u])
                take = min(b - first, qb - q, n - p)
                yield q, shard, first, first + take
                q += take

    def _size_of(self) -> Callable[[int], int]:
        """Estimated bytes of the sample at rank position ``q``: its shard's mean (from the index)."""
        units, starts = self._units()
        n, base = self.num_samples, self.rank * self.rank_length
        means = [s.mean_sample_bytes for s in self.specs]

        def size(q: int) -> int:
            p = (base + q) % n
            return means[units[bisect_right(starts, p) - 1][0]]

        return size

    # ------------------------------------------------------------ plans
    def full_plan(self, num_workers: int) -> dict:
        return {"intervals": [(0, self.rank_length)], "num_workers": num_workers, "gen": 0, "epoch": self.epoch}

    def _part(self, plan: dict, worker: int) -> list[Interval]:
        """Worker ``worker``'s contiguous share of the plan: whole blocks of ``block`` positions."""
        intervals, w_count = plan["intervals"], plan["num_workers"]
        m = _total(intervals)
        b = self.block
        blocks = -(-m // b)
        lo, hi = worker * blocks // w_count * b, min((worker + 1) * blocks // w_count * b, m)
        return _slice(intervals, lo, hi)

    def output_order(self, plan: dict, worker: int) -> Sequence[int] | None:
        """Positions in the order worker ``worker`` yields them, or ``None`` when it is the part's order."""
        part = self._part(plan, worker)
        if not self.shuffle or self.shuffle_buffer_bytes == 0:
            return None
        rng = _rng("buffer", self.seed, plan["epoch"], self.rank, plan["gen"], worker)
        size = self._size_of()
        cap = self.shuffle_buffer_bytes
        buf: list[int] = []
        held = 0
        out = array("q")  # 8 bytes per position
        randrange = rng.randrange
        for a, b in part:
            for q in range(a, b):
                buf.append(q)
                held += size(q)
                while held > cap and buf:
                    j = randrange(len(buf))
                    buf[j], buf[-1] = buf[-1], buf[j]
                    q_out = buf.pop()
                    held -= size(q_out)
                    out.append(q_out)
        rng.shuffle(buf)
        out.extend(buf)
        return out

    def delivered(self, plan: dict, worker: int, consumed: int) -> list[Interval]:
        """Positions worker ``worker`` of ``plan`` has yielded after ``consumed`` samples."""
        order = self.output_order(plan, worker)
        if order is None:
            return _slice(self._part(plan, worker), 0, consumed)
        return _to_intervals(order[:consumed])

    def rank_len(self) -> int:
        """Samples this rank yields per epoch (the same on every rank)."""
        return self.rank_length

    # ------------------------------------------------------------ streaming
    def iter_worker(self, worker: int = 0, num_workers: int = 1, *, raw: bool = False) -> Iterator[tuple[int, Any]]:
        """Yield ``(position, sample)`` for worker ``worker`` of ``num_workers`` this epoch.

        ``raw=True`` yields ``(position, (payload, url, key_of, i))`` instead, undecoded, for
        callers that decode whole batches at once (``key_of(i)`` names the sample in errors).
        """
        if not 0 <= worker < num_workers:
            raise ValueError(f"worker {worker} is not in [0, {num_workers})")
        pending, self._pending = self._pending, None
        skip = 0
        plan = self.full_plan(num_workers)
        if pending is not None:
            kind, st = pending
            if kind == "worker":
                if st["num_workers"] != num_workers or st["worker"] != worker:
                    raise LoaderStateError(
                        f"this state is worker {st['worker']}'s of {st['num_workers']}, but it was loaded into "
                        f"worker {worker} of {num_workers}; to resume onto another worker count, load the whole "
                        "DataLoader state into the dataset: ds.load_state_dict(loader.state_dict())"
                    )
                plan = _plan_of(st["plan"])
                skip = int(st["consumed"])
            else:
                plan = {**st, "num_workers": num_workers}
        self.epoch = plan["epoch"]
        self._plan, self._worker, self._consumed = plan, worker, skip
        order = self.output_order(plan, worker)
        if order is None:
            part = _slice(self._part(plan, worker), skip, 1 << 62)
            for q, sample in self._read(part, raw=raw):
                self._consumed += 1
                yield q, sample
            return
        rest = order[skip:]
        if not rest:
            return
        wanted = None
        if skip:  # only what is left to yield is read (a bitmap over the rank's positions)
            wanted = bytearray(self.rank_length)
            for q in rest:
                wanted[q] = 1
        reading = self._read(self._part(plan, worker), wanted, raw=raw)
        held: dict[int, Any] = {}
        for q in rest:
            while q not in held:
                got_q, sample = next(reading)
                held[got_q] = sample
            sample = held.pop(q)
            self._consumed += 1
            yield q, sample

    def _read(self, part: Sequence[Interval], wanted: bytearray | None = None, raw: bool = False) -> Iterator[tuple[int, Any]]:
        """``(position, sample)`` for ``part`` in order, each shard verified before any of its samples.

        ``raw=True`` yields ``(position, (payload, url, key_of, i))`` instead (see
        :meth:`iter_worker`). Consecutive ranges of one shard share one open file; a local
        plain shard is memory-mapped and its payloads are slices of the map. The next shard
        is verified (hashed, or downloaded into the cache) on a background thread while
        this one is decoded: hashlib and file reads release the GIL, so verification
        overlaps decoding.
        """
        runs = list(self._runs(part))
        if wanted is not None:  # only the shard ranges that hold a wanted position are read
            runs = [r for r in runs if wanted.find(1, r[0], r[0] + r[3] - r[2]) >= 0]
        groups: list[tuple[int, list[tuple[int, int, int, int]]]] = []
        for run in runs:
            if groups and groups[-1][0] == run[1]:
                groups[-1][1].append(run)
            else:
                groups.append((run[1], [run]))
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="atdata-verify")
        opened: dict[int, Future] = {}
        try:
            for g, (shard, shard_runs) in enumerate(groups):
                for k in (g, g + 1):  # this shard, and the next one ahead (unless already mapped)
                    if k < len(groups) and k not in opened and groups[k][0] not in self._mapped:
                        opened[k] = pool.submit(self._open_verified, groups[k][0])
                index = self._mapped.get(shard)
                if index is None:
                    with closing(opened.pop(g).result()) as f:
                        index = open_index(f, self.specs[shard].url)
                        if index is None:  # not a local plain file: the stream parser
                            for j, run in enumerate(shard_runs):
                                if j and run[2] == 0:
                                    f.seek(0)  # a second range of this shard starting at its first sample
                                yield from self._read_stream(f, shard, run, wanted, raw)
                            continue
                    if len(self._mapped) >= _MAPPED_SHARDS:
                        self._mapped.pop(next(iter(self._mapped)))
                    self._mapped[shard] = index
                for run in shard_runs:
                    yield from self._read_mapped(index, shard, run, wanted, raw)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
            for fut in opened.values():  # a shard opened ahead and never read
                fut.add_done_callback(_close_result)

    def _read_mapped(
        self, index: Any, shard: int, run: tuple[int, int, int, int], wanted: bytearray | None, raw: bool
    ) -> Iterator[tuple[int, Any]]:
        q, _, a, b = run
        url = self.specs[shard].url
        if len(index) < b:
            raise ShardError(f"shard {url} holds fewer samples than recorded (wanted samples {a}..{b - 1})")
        decode = self._decode
        fast = self.dataset._payload_decoder(self.fields)
        view = memoryview(index.buffer)
        key_of = _key_reader(index)
        starts = index.offsets[a:b].tolist()
        ends = (index.offsets[a:b] + index.sizes[a:b]).tolist()
        for i, (start, end) in enumerate(zip(starts, ends)):
            if wanted is not None and not wanted[q + i]:
                continue
            payload = view[start:end]
            if raw:
                yield q + i, (payload, url, key_of, a + i)
                continue
            try:
                sample = fast(payload)
            except Exception:  # noqa: BLE001 - the fast decoder is an optimisation; the per-sample decoder raises the precise error
                sample = decode(url, key_of(a + i), payload)  # raises the dataset's usual error
            yield q + i, sample

    def _read_stream(
        self, f: BinaryIO, shard: int, run: tuple[int, int, int, int], wanted: bytearray | None, raw: bool
    ) -> Iterator[tuple[int, Any]]:
        q, _, a, b = run
        url = self.specs[shard].url
        decode = self._decode
        offsets = self._offsets_for(shard, f) if a > 0 else None
        for i, (key, payload) in enumerate(iter_range(f, url, offsets, a, b)):
            if wanted is not None and not wanted[q + i]:
                continue
            if raw:
                yield q + i, (payload, url, _constant(key), a + i)
                continue
            yield q + i, decode(url, key, payload)

    # ------------------------------------------------------------ verified opening
    def _offsets_for(self, shard: int, f: BinaryIO) -> ShardOffsets | None:
        got = self._offsets.get(shard)
        if got is None:
            try:
                if not f.seekable():
                    return None
            except (AttributeError, ValueError):
                return None
            f.seek(0)  # iter_range seeks to the first wanted sample afterwards
            got = self._offsets[shard] = scan_offsets(f, self.specs[shard].url)
        return got

    def _open_verified(self, shard: int) -> BinaryIO:
        spec = self.specs[shard]
        url = spec.url
        expected = spec.sha256.lower() if (self.verify and spec.sha256) else None
        if is_local_url(url):
            path = local_path(url)
            if expected is not None:
                try:
                    st = os.stat(path)
                except FileNotFoundError:
                    raise ShardNotFoundError(f"shard {url} does not exist (moved, deleted or garbage-collected?); "
                                     "check the dataset's URLs or re-materialize it") from None
                memo = (path, st.st_size, st.st_mtime_ns, expected)
                if memo not in self._verified:
                    with closing(self.dataset._open(url)) as f:
                        digest = _sha256(f)
                    if digest != expected:
                        raise _mismatch(url, expected, digest)
                    self._verified[memo] = True
            return self.dataset._open(url)
        if self.cache is not None:
            return open(self.cache.fetch(url, expected, self.dataset._open), "rb")
        return _spool(self.dataset._open, url, expected)


#: Local shards a loader keeps mapped (a shard split into several units is indexed once).
_MAPPED_SHARDS = 4


def _key_reader(index: Any) -> Callable[[int], str]:
    return lambda i: sample_key(index, i)


def _constant(key: str) -> Callable[[int], str]:
    return lambda _i: key


def _close_result(fut: Future) -> None:
    if not fut.cancelled() and fut.exception() is None:
        fut.result().close()


def _sha256(f: BinaryIO) -> str:
    h = hashlib.sha256()
    read = f.read
    while True:
        chunk = read(READ_CHUNK)
        if not chunk:
            return h.hexdigest()
        h.update(chunk)


def _mismatch(url: str, expected: str, actual: str) -> ChecksumMismatchError:
    return ChecksumMismatchError(
        f"shard {url} does not match the checksum recorded in the index (expected sha256 {expected}, "
        f"got {actual}); none of its samples were yielded. The shard is corrupt, truncated or was "
        "replaced: restore it from its source or re-materialize the dataset"
    )


def _spool(open_fn: Callable[[str], BinaryIO], url: str, expected: str | None) -> BinaryIO:
    """A remote shard copied to a seekable temp file (hashed on the way) before any sample is read."""
    out = tempfile.SpooledTemporaryFile(max_size=_SPOOL_MEMORY)
    h = hashlib.sha256()
    with closing(open_fn(url)) as src:
        while True:
            chunk = src.read(READ_CHUNK)
            if not chunk:
                break
            h.update(chunk)
            out.write(chunk)
    if expected is not None and h.hexdigest() != expected:
        out.close()
        raise _mismatch(url, expected, h.hexdigest())
    out.seek(0)
    return out  # type: ignore[return-value]


# ---------------------------------------------------------------- state


def make_state(loader: Loader, worker: int = 0, num_workers: int = 1) -> dict:
    """The resume state of the stream running in this process (see the module docstring).

    Before the stream starts it is the state of worker ``worker`` of ``num_workers`` at
    the start of the epoch (or the state loaded and not yet used).
    """
    plan = loader._plan
    consumed = loader._consumed
    if plan is None:
        if loader._pending is not None:  # loaded but not started: hand the loaded state on
            kind, st = loader._pending
            if kind == "worker":
                return dict(st)
            return global_state(loader, st)
        plan, worker, consumed = loader.full_plan(num_workers), worker, 0
    else:
        worker = loader._worker
    return _header(loader) | {
        "kind": "worker",
        "epoch": plan["epoch"],
        "plan": _jsonable_plan(plan),
        "num_workers": plan["num_workers"],
        "worker": worker,
        "consumed": consumed,
    }


def _header(loader: Loader) -> dict:
    return {
        "format": STATE_FORMAT,
        "dataset": loader.identity,
        "epoch": loader.epoch,
        "seed": loader.seed,
        "shuffle": loader.shuffle,
        "rank": loader.rank,
        "world_size": loader.world_size,
        "drop_last": loader.drop_last,
        "num_samples": loader.num_samples,
        "shuffle_buffer_bytes": loader.shuffle_buffer_bytes,
        "block": loader.block,
    }


def _jsonable_plan(plan: dict) -> dict:
    return {"intervals": [list(iv) for iv in plan["intervals"]], "num_workers": plan["num_workers"],
            "gen": plan["gen"], "epoch": plan["epoch"]}


def _plan_of(raw: dict) -> dict:
    return {"intervals": [(int(a), int(b)) for a, b in raw["intervals"]], "num_workers": int(raw["num_workers"]),
            "gen": int(raw["gen"]), "epoch": int(raw["epoch"])}


_MUST_MATCH = ("seed", "shuffle", "rank", "world_size", "drop_last", "num_samples", "shuffle_buffer_bytes", "block")


def check_state(loader: Loader, state: Any) -> dict:
    """Validate a state against this loader: format, dataset identity and plan settings."""
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise LoaderStateError(
            f"not an atdata-dagster loader state (format {state.get('format') if isinstance(state, dict) else type(state).__name__!r}); "
            "pass what TorchDataset.state_dict() or the DataLoader's state_dict() returned"
        )
    if state.get("dataset") != loader.identity:
        raise LoaderStateError(
            f"this state belongs to dataset {state.get('dataset')!r}, not to {loader.identity!r}: resuming "
            "would skip or repeat the wrong samples. Resume on the dataset version the state was saved from "
            "(index.dataset(name@version) or by CID), or start a fresh epoch"
        )
    for k in _MUST_MATCH:
        if state.get(k) != getattr(loader, k):
            raise LoaderStateError(
                f"this state was saved with {k}={state.get(k)!r}, but the loader has {k}={getattr(loader, k)!r}; "
                f"create the loader with the same {k} to resume"
            )
    return state


def merge_states(loader: Loader, states: Sequence[dict]) -> dict:
    """The positions not yet delivered, from the states of every worker of one plan: a new plan."""
    if not states:
        raise LoaderStateError("no worker states to resume from")
    for st in states:
        check_state(loader, st)
    if all(st.get("kind") == "global" for st in states):
        return _plan_of(states[0]["plan"])
    plans = {json.dumps(st["plan"], sort_keys=True) for st in states}
    if len(plans) != 1:
        raise LoaderStateError("the worker states come from different plans (different epochs or resumes)")
    plan = _plan_of(states[0]["plan"])
    by_worker = {int(st["worker"]): int(st["consumed"]) for st in states}
    if sorted(by_worker) != list(range(plan["num_workers"])):
        raise LoaderStateError(
            f"the state has workers {sorted(by_worker)} of a plan of {plan['num_workers']} workers; "
            "a state of every worker is needed"
        )
    saved_epoch = loader.epoch
    loader.epoch = plan["epoch"]
    try:
        done = bytearray(loader.rank_length)
        for w, k in by_worker.items():
            _mark(done, loader.delivered(plan, w, k))
    finally:
        loader.epoch = saved_epoch
    return {"intervals": _unmarked(done, plan["intervals"]), "num_workers": plan["num_workers"],
            "gen": plan["gen"] + 1, "epoch": plan["epoch"]}


def load_state(loader: Loader, state: dict) -> None:
    """Resume from one worker's state (same worker count) or a merged global state (any count)."""
    check_state(loader, state)
    if state.get("kind") == "worker":
        loader._pending = ("worker", dict(state))
    elif state.get("kind") == "global":
        plan = _plan_of(state["plan"])
        loader._pending = ("global", plan)
    else:
        raise LoaderStateError(f"unknown loader state kind {state.get('kind')!r}")
    loader.epoch = int(state["epoch"])
    loader._plan = None


def global_state(loader: Loader, plan: dict) -> dict:
    return _header(loader) | {"kind": "global", "epoch": plan["epoch"], "plan": _jsonable_plan(plan)}


