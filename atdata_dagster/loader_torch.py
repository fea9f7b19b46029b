"""The ``torch.utils.data.IterableDataset`` behind :meth:`Dataset.torch` (needs the ``[torch]`` extra).

This module imports torch at the top; :mod:`atdata_dagster.dataset` imports it only when
``Dataset.torch()`` is called, so the rest of the package works without torch. The plan,
verification and resume logic are in :mod:`atdata_dagster.loader`; this class adds
DataLoader workers (``torch.utils.data.get_worker_info``), ``torch.distributed`` defaults,
collation into tensors and the ``StatefulDataLoader`` protocol.
"""

from __future__ import annotations

import dataclasses
from itertools import islice
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from .errors import LoaderStateError
from .loader import Loader, global_state, load_state, make_state, merge_states

__all__ = ["TorchDataset", "collate"]


def _dist_defaults(rank: int | None, world_size: int | None) -> tuple[int, int]:
    dist = torch.distributed
    live = dist.is_available() and dist.is_initialized()
    if rank is None:
        rank = dist.get_rank() if live else 0
    if world_size is None:
        world_size = dist.get_world_size() if live else 1
    return rank, world_size


def _fields_of(sample: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(sample):
        return {f.name: getattr(sample, f.name) for f in dataclasses.fields(sample)}
    data = getattr(sample, "_data", None)
    if isinstance(data, dict):
        return data
    if isinstance(sample, dict):
        return sample
    raise TypeError(f"cannot collate {type(sample).__name__} samples; pass a collate_fn to the DataLoader")


def collate(samples: Sequence[Any]) -> dict[str, Any]:
    """A batch of samples as ``{field: value}``: stacked tensors for arrays and numbers, lists otherwise.

    Usable as a DataLoader ``collate_fn`` for ``Dataset.torch()`` without ``batch_size``.
    """
    rows = [_fields_of(s) for s in samples]
    return {name: collate_values([r.get(name) for r in rows]) for name in (rows[0] if rows else ())}


def collate_values(values: list[Any]) -> Any:
    """One field's batch value: a stacked tensor for equal-shaped arrays and for numbers, else the list."""
    first = values[0] if values else None
    try:
        if isinstance(first, np.ndarray) and all(isinstance(v, np.ndarray) and v.shape == first.shape for v in values):
            return torch.from_numpy(np.stack(values))
        if values and all(isinstance(v, (bool, int, float, np.number)) for v in values):
            return torch.as_tensor(values)
    except (TypeError, ValueError):  # dtypes torch has no tensor for (strings, objects): keep the list
        pass
    return values


class TorchDataset(IterableDataset):
    """An exactly-once, resumable, verified ``IterableDataset`` over a :class:`~atdata_dagster.dataset.Dataset`.

    Made by :meth:`Dataset.torch`; see docs/training.md. ``len()`` is the number of
    samples per rank (or of batches per rank with ``batch_size``); the same on every rank.
    """

    def __init__(self, dataset: Any, *, batch_size: int | None = None, rank: int | None = None,
                 world_size: int | None = None, **options: Any):
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
        rank, world_size = _dist_defaults(rank, world_size)
        self.dataset = dataset
        self.batch_size = batch_size
        self.loader = Loader(dataset, rank=rank, world_size=world_size, block=batch_size or 1, **options)

    # -- what DDP and the trainer see
    @property
    def rank(self) -> int:
        return self.loader.rank

    @property
    def world_size(self) -> int:
        return self.loader.world_size

    @property
    def epoch(self) -> int:
        return self.loader.epoch

    @property
    def cid(self) -> str:
        """The dataset identity resume states are tied to (the index entry's CID when known)."""
        return self.loader.identity

    def set_epoch(self, epoch: int) -> None:
        """Use epoch ``epoch``'s order (deterministic from ``(seed, epoch)``); call it before each epoch."""
        self.loader.set_epoch(epoch)

    def __len__(self) -> int:
        n = self.loader.rank_len()
        if self.batch_size is None:
            return n
        return -(-n // self.batch_size)  # workers' parts are whole batches: only the last can be short

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if self.batch_size is None:
            for _, sample in self.loader.iter_worker(worker, workers):
                yield sample
            return
        # batches are decoded from the raw payloads at once (columns, no per-sample objects)
        stream = self.loader.iter_worker(worker, workers, raw=True)
        b = self.batch_size
        while True:
            items = [item for _, item in islice(stream, b)]
            if not items:
                return
            yield self._collate_payloads(items)

    def _collate_payloads(self, items: list[tuple[Any, str, Any, int]]) -> dict[str, Any]:
        """What :func:`collate` gives for these samples, decoded as one batch when possible."""
        ds = self.dataset
        dec, from_bytes = ds._batch_decoder(self.loader.fields)
        columns = dec.decode([p for p, *_ in items]) if dec is not None else None
        if columns is None:
            decode = self.loader._decode
            return collate([decode(url, key_of(i), p) for p, url, key_of, i in items])
        out: dict[str, Any] = {}
        for name, values in columns.items():
            if isinstance(values, np.ndarray):
                try:
                    out[name] = torch.from_numpy(values)
                    continue
                except TypeError:  # a dtype torch has no tensor for: the per-sample arrays, as collate()
                    values = list(values)
            out[name] = collate_values(values)
        return out

    # -- resume
    def state_dict(self) -> dict:
        """Where this stream stands: the plan, this worker and the samples it has yielded (JSON-able)."""
        info = get_worker_info()
        if info is None:
            return make_state(self.loader)
        return make_state(self.loader, info.id, info.num_workers)

    def load_state_dict(self, state: dict) -> None:
        """Resume from a saved state.

        Accepts this dataset's own ``state_dict()`` (what ``StatefulDataLoader`` passes each
        worker when the worker count is unchanged), or the whole
        ``StatefulDataLoader.state_dict()``: loaded on the dataset before creating a new
        DataLoader, that resumes onto **any** number of workers.
        """
        worker_states = _worker_states(state)
        if worker_states is None:
            load_state(self.loader, state)
            return
        plan = merge_states(self.loader, worker_states)
        load_state(self.loader, global_state(self.loader, plan))


def _worker_states(state: Any) -> list[dict] | None:
    """The per-worker dataset states inside a ``StatefulDataLoader`` state, or ``None`` for a dataset state."""
    if not isinstance(state, dict) or "format" in state:
        return None
    if "_snapshot" in state:
        snaps = (state["_snapshot"] or {}).get("_worker_snapshots") or {}
        out = []
        for key in sorted(snaps, key=lambda k: int(str(k).rsplit("_", 1)[-1])):
            ds_state = (snaps[key] or {}).get("dataset_state")
            if ds_state is None:
                raise LoaderStateError(f"the DataLoader state has no dataset state for {key}; "
                                       "was it saved from a loader over Dataset.torch()?")
            out.append(ds_state)
        return out
    if "dataset_state" in state:  # StatefulDataLoader with num_workers=0
        return [state["dataset_state"]]
    raise LoaderStateError("not a loader state: expected TorchDataset.state_dict() or StatefulDataLoader.state_dict()")
