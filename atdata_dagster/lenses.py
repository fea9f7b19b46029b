"""Lenses: typed, composable transforms between sample types, as atdata's ``atdata.lens``.

A :class:`Lens` ``S -> V`` has a getter (``S -> V``) and a putter (``(V, S) -> S``,
the identity on the source unless given). ``@lens`` builds one from an annotated
function and registers it in the process-wide :class:`LensNetwork`;
``Dataset.as_type(V)`` then reads a ``Dataset[S]`` as ``V`` through it::

    @lens
    def gray(img: ColorImage) -> GrayImage:
        return GrayImage(pixels=img.pixels.mean(axis=-1), label=img.label)

    @gray.putter
    def gray_put(view: GrayImage, source: ColorImage) -> ColorImage:
        return ColorImage(pixels=source.pixels, label=view.label)

    ds.as_type(GrayImage)   # Dataset[ColorImage] -> Dataset[GrayImage]

Where atdata's network only looks up a lens registered for exactly ``(S, V)``, this
one finds the shortest chain of registered lenses (``S -> A -> V``) and composes it.
``DictSample -> T`` needs no registration (it decodes the fields as ``T``), and a
type whose fields are a subset of the source's gets a structural lens, as in atdata.

Lenses are stored in an index in atdata's ``lenses`` table / ``lens:{name}@{version}``
keys (:meth:`Index.store_lens`), as field mappings or code references, never as code
to ``eval``; :func:`lens_from_record` rebuilds them.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import json
import threading
import typing
from collections import deque
from datetime import datetime, timezone
from typing import Any, Callable, Generic, TypeVar

from .errors import LensNotFoundError
from .samples import DictSample

__all__ = ["Lens", "LensNetwork", "lens", "lens_from_record", "lens_to_json"]

S = TypeVar("S")
V = TypeVar("V")
W = TypeVar("W")


class Lens(Generic[S, V]):
    """A transform ``S -> V`` (getter) with an optional way back ``(V, S) -> S`` (putter)."""

    def __init__(self, get: Callable[[S], V], put: Callable[[V, S], S] | None = None,
                 *, source_type: Any = None, view_type: Any = None) -> None:
        params = list(inspect.signature(get).parameters.values())
        if len(params) != 1:
            raise ValueError(
                f"Lens getter must have exactly one parameter, got {len(params)}: {[p.name for p in params]}"
            )
        try:
            hints = typing.get_type_hints(get)
        except Exception:  # noqa: BLE001 - unresolvable string annotations: fall back to the raw ones
            hints = {}
        functools.update_wrapper(self, get)
        self.source_type: Any = source_type or hints.get(params[0].name, params[0].annotation)
        self.view_type: Any = view_type or hints.get("return", inspect.signature(get).return_annotation)
        self._getter = get
        self._putter: Callable[[V, S], S] = put if put is not None else (lambda v, s: s)

    def putter(self, put: Callable[[V, S], S]) -> Callable[[V, S], S]:
        """Decorator: set the function that writes a changed view back into a source."""
        self._putter = put
        return put

    def get(self, s: S) -> V:
        """The view of ``s``."""
        return self._getter(s)

    def put(self, v: V, s: S) -> S:
        """``s`` updated from the (changed) view ``v``."""
        return self._putter(v, s)

    def __call__(self, s: S) -> V:
        return self._getter(s)

    @staticmethod
    def identity(sample_type: Any) -> "Lens[Any, Any]":
        """The lens that changes nothing (``get`` and ``put`` return what they are given)."""
        return Lens(lambda s: s, lambda v, s: v, source_type=sample_type, view_type=sample_type)

    def __or__(self, other: "Lens[V, W]") -> "Lens[S, W]":
        """``self | other``: first ``self``, then ``other``."""
        if not isinstance(other, Lens):
            return NotImplemented
        get1, put1, get2, put2 = self._getter, self._putter, other._getter, other._putter

        def composite_put(w: W, s: S) -> S:
            return put1(put2(w, get1(s)), s)

        return Lens(lambda s: get2(get1(s)), composite_put, source_type=self.source_type, view_type=other.view_type)

    def __matmul__(self, other: "Lens[Any, S]") -> "Lens[Any, V]":
        """``self @ other``: first ``other``, then ``self`` (function composition)."""
        if not isinstance(other, Lens):
            return NotImplemented
        return other | self

    def __repr__(self) -> str:
        name = lambda t: getattr(t, "__name__", str(t))  # noqa: E731
        return f"Lens[{name(self.source_type)} -> {name(self.view_type)}]({getattr(self, '__name__', '?')})"


def _fields(t: Any) -> list[str] | None:
    return [f.name for f in dataclasses.fields(t)] if isinstance(t, type) and dataclasses.is_dataclass(t) else None


def _structural(source: Any, view: Any) -> Lens[Any, Any] | None:
    """``DictSample -> T`` (decode the fields as ``T``), or a view whose fields are a subset of the source's."""
    view_fields = _fields(view)
    if view_fields is None:
        return None
    if source is DictSample:
        def from_dict(d: DictSample) -> Any:
            return view.from_data(d.to_dict())

        return Lens(from_dict, source_type=DictSample, view_type=view)
    source_fields = _fields(source)
    if source_fields is None or not set(view_fields) <= set(source_fields):
        return None

    def project(s: Any) -> Any:
        return view(**{n: getattr(s, n) for n in view_fields})

    def put_back(v: Any, s: Any) -> Any:
        return dataclasses.replace(s, **{n: getattr(v, n) for n in view_fields})

    return Lens(project, put_back, source_type=source, view_type=view)


class LensNetwork:
    """The process-wide registry of lenses (a singleton, as atdata's)."""

    _instance: "LensNetwork | None" = None
    _lock = threading.Lock()

    def __new__(cls) -> "LensNetwork":
        with cls._lock:
            if cls._instance is None:
                inst = super().__new__(cls)
                inst._registry = {}
                cls._instance = inst
            return cls._instance

    _registry: dict[tuple[Any, Any], Lens[Any, Any]]

    def register(self, lens_obj: Lens[Any, Any]) -> None:
        """Make ``lens_obj`` the lens from its source type to its view type (replacing any earlier one)."""
        self._registry[(lens_obj.source_type, lens_obj.view_type)] = lens_obj

    def find(self, source: Any, view: Any) -> Lens[Any, Any] | None:
        """The shortest chain of registered lenses ``source -> ... -> view``, composed; else a
        structural lens (``DictSample -> T``, or fields a subset); else ``None``."""
        if source is view:
            return Lens.identity(source)
        direct = self._registry.get((source, view))
        if direct is not None:
            return direct
        edges: dict[Any, list[Lens[Any, Any]]] = {}
        for (src, _), lens_obj in self._registry.items():
            edges.setdefault(src, []).append(lens_obj)
        queue: deque[tuple[Any, Lens[Any, Any] | None]] = deque([(source, None)])
        seen = {source}
        while queue:
            node, path = queue.popleft()
            for step in edges.get(node, []):
                chain = step if path is None else path | step
                if step.view_type is view:
                    return chain
                if step.view_type not in seen:
                    seen.add(step.view_type)
                    queue.append((step.view_type, chain))
        return _structural(source, view)

    def transform(self, source: Any, view: Any) -> Lens[Any, Any]:
        """:meth:`find`, or :class:`LensNotFoundError` (a ``ValueError``) naming what is registered from ``source``."""
        found = self.find(source, view)
        if found is None:
            targets = sorted(getattr(v, "__name__", str(v)) for (s, v) in self._registry if s is source)
            raise LensNotFoundError(
                f"no lens from {getattr(source, '__name__', source)} to {getattr(view, '__name__', view)}: register one "
                f"with @lens (a function {getattr(source, '__name__', 'S')} -> {getattr(view, '__name__', 'V')}); "
                f"lenses from {getattr(source, '__name__', source)}: {targets or 'none'}"
            )
        return found


def lens(f: Callable[[S], V]) -> Lens[S, V]:
    """Decorator: a :class:`Lens` from an annotated getter, registered in the :class:`LensNetwork`."""
    made: Lens[S, V] = Lens(f)
    LensNetwork().register(made)
    return made


# ------------------------------------------------------------------ records (atdata's lens JSON)


def _code_ref(fn: Any) -> dict[str, str] | None:
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    if not module or not qualname or "<lambda>" in qualname or "<locals>" in qualname:
        return None
    return {"module": module, "qualname": qualname}


def _schema_name(t: Any) -> str:
    return t if isinstance(t, str) else getattr(t, "__name__", "Unknown")


def lens_to_json(lens_obj: Lens[Any, Any], *, name: str, version: str = "1.0.0", description: str | None = None,
                 source_schema: str | None = None, view_schema: str | None = None) -> str:
    """A lens as atdata's lens record (JSON text).

    An importable getter/putter is stored as a code reference (re-imported, never
    ``eval``-ed). A getter that is not importable (a lambda, a local function) is
    stored as a field mapping only when the view's fields are a subset of the
    source's, and as ``opaque`` (documented, not rebuildable) otherwise. Unlike atdata,
    an importable getter is never reduced to a field mapping, which would silently drop
    what it computes.
    """
    getter_ref, putter_ref = _code_ref(lens_obj._getter), _code_ref(lens_obj._putter)
    view_fields, source_fields = _fields(lens_obj.view_type), _fields(lens_obj.source_type)
    mapping = None
    if view_fields is not None and source_fields is not None and set(view_fields) <= set(source_fields):
        mapping = [{"source_field": f, "view_field": f, "transform": None} for f in view_fields]
    getter: dict[str, Any]
    if getter_ref is not None:
        getter = {"kind": "code_reference", **getter_ref}
    elif mapping is not None:
        getter = {"kind": "field_mapping", "mappings": mapping}
    else:
        getter = {"kind": "opaque"}
    putter: dict[str, Any]
    if putter_ref is not None:
        putter = {"kind": "code_reference", **putter_ref}
    elif getter["kind"] == "field_mapping" and mapping is not None:
        putter = {"kind": "field_mapping", "mappings": [
            {"source_field": m["view_field"], "view_field": m["source_field"], "transform": None} for m in mapping]}
    else:
        putter = {"kind": "opaque"}
    record: dict[str, Any] = {
        "name": name, "version": version,
        "source_schema": source_schema or _schema_name(lens_obj.source_type),
        "view_schema": view_schema or _schema_name(lens_obj.view_type),
        "getter": getter, "putter": putter,
        "created_at": datetime.now(timezone.utc).isoformat(),
    }
    if description:
        record["description"] = description
    return json.dumps(record)


def _import(desc: dict[str, Any]) -> Callable[..., Any]:
    obj: Any = importlib.import_module(desc["module"])
    for part in str(desc["qualname"]).split("."):
        obj = getattr(obj, part)
    if isinstance(obj, Lens):  # an @lens-decorated getter is stored by its own name
        return obj._getter
    return obj


def lens_from_record(record: dict[str, Any], *, source_type: Any = None, view_type: Any = None,
                     register: bool = True) -> Lens[Any, Any]:
    """Rebuild a lens from its record (code references are imported; field mappings need the two types).

    Raises ``ValueError`` for an opaque getter, or a field mapping without ``source_type``/``view_type``.
    """
    name = record.get("name", "?")
    getter_desc, putter_desc = record.get("getter") or {}, record.get("putter") or {}
    kind = getter_desc.get("kind", "opaque")
    if kind == "code_reference":
        get = _import(getter_desc)
    elif kind == "field_mapping":
        if view_type is None or source_type is None:
            raise ValueError(f"lens {name!r} is a field mapping: pass source_type= and view_type= to rebuild it")
        pairs = [(m["source_field"], m["view_field"]) for m in getter_desc.get("mappings", [])]

        def get(s: Any) -> Any:
            return view_type(**{vf: getattr(s, sf) for sf, vf in pairs})
    else:
        raise ValueError(f"lens {name!r} has a getter of kind {kind!r}, which cannot be rebuilt; define it with @lens")
    put: Callable[[Any, Any], Any] | None = None
    if putter_desc.get("kind") == "code_reference":
        put = _import(putter_desc)
    elif putter_desc.get("kind") == "field_mapping" and kind == "field_mapping":
        back = [(m["view_field"], m["source_field"]) for m in putter_desc.get("mappings", [])]

        def put(v: Any, s: Any) -> Any:
            return dataclasses.replace(s, **{sf: getattr(v, vf) for vf, sf in back})
    made: Lens[Any, Any] = Lens(get, put, source_type=source_type, view_type=view_type)
    if register:
        LensNetwork().register(made)
    return made
