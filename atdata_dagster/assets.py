"""Yield-style dataset assets: ``@dataset_asset`` and ``@dataset_multi_asset``.

Dagster reads a generator function as a stream of *events*, so a plain ``@dg.asset``
that ``yield``s samples fails ("yielded a value of type ...") and users had to write
``return dg.Output(gen())``. With :func:`dataset_asset` the function may ``yield``
samples, which stream into shards as they are produced (nothing is held in memory), and
may also ``yield`` Dagster events (``AssetCheckResult``, ``AssetObservation``...), which
are reported once the dataset is stored::

    @dataset_asset(group_name="digits", metadata={"atdata/maxcount": 1000})
    def digits_raw():
        for i in range(70_000):
            yield Digit(image=..., label=i % 10)
        yield dg.AssetCheckResult(check_name="enough", passed=True)

The decorated function keeps its parameters (``context``, upstream ``Dataset[T]``
inputs, resources), so everything ``dg.asset`` infers from them still works. Its
``atdata/*`` metadata is checked when the definitions load, not when the asset runs.

A plain ``@dg.asset`` generator that yields samples now fails with an error naming both
fixes (this decorator, or ``return dg.Output(gen())``), instead of Dagster's generic one.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from typing import Any, Callable, Iterable, Iterator, Mapping

import dagster as dg

from .errors import ConfigurationError
from .resolution import validate_output_metadata
from .samples import PackableSample

try:  # Dagster-internal (see _install_bare_generator_hint); guarded, a test fails if it moves
    from dagster._core.execution.plan import compute as _dagster_compute
except ImportError:  # pragma: no cover
    _dagster_compute = None  # type: ignore[assignment]

__all__ = ["dataset_asset", "dataset_multi_asset"]

#: What a dataset function may yield besides samples: reported to Dagster after the write.
_EVENTS = (dg.AssetCheckResult, dg.AssetObservation, dg.AssetMaterialization, dg.ExpectationResult)


def _split(items: Iterable[Any], events: list[Any]) -> Iterator[Any]:
    """The samples of ``items``; Dagster events are set aside in ``events``."""
    for item in items:
        if isinstance(item, _EVENTS):
            events.append(item)
        else:
            yield item


def _without_return(fn: Callable[..., Any]) -> inspect.Signature:
    """``fn``'s signature for Dagster: string annotations resolved in ``fn``'s own module
    (the wrapper lives here, where ``Dataset[Row]`` would not resolve), and no return
    annotation (the wrapper yields Dagster events, whatever ``fn`` returns)."""
    try:
        sig = inspect.signature(fn, eval_str=True)
    except NameError:  # an annotation naming a type local to a function: Dagster reports it as usual
        sig = inspect.signature(fn)
    return sig.replace(return_annotation=inspect.Signature.empty)


def _check_generator_or_iterable(fn: Callable[..., Any], decorator: str) -> None:
    if not callable(fn):
        raise ConfigurationError(f"@{decorator} decorates a function, got {fn!r}")


def dataset_asset(fn: Callable[..., Any] | None = None, **asset_kwargs: Any) -> Any:
    """``dg.asset`` for a function that ``yield``s (or returns) samples; see the module docstring.

    Takes the same keyword arguments as ``dg.asset`` (``name``, ``key_prefix``, ``ins``,
    ``deps``, ``metadata``, ``partitions_def``, ``group_name``, ``check_specs``...). Use it
    bare (``@dataset_asset``) or called (``@dataset_asset(...)``). Raises
    :class:`~atdata_dagster.errors.ConfigurationError` at decoration time for invalid
    ``atdata/*`` metadata.
    """

    def decorate(fn: Callable[..., Any]) -> dg.AssetsDefinition:
        _check_generator_or_iterable(fn, "dataset_asset")
        name = asset_kwargs.get("name") or fn.__name__
        validate_output_metadata(asset_kwargs.get("metadata"), name)

        @functools.wraps(fn)
        def compute(*args: Any, **kwargs: Any) -> Iterator[Any]:
            events: list[Any] = []
            result = fn(*args, **kwargs)
            if isinstance(result, dg.Output):  # an explicit Output: as dg.asset would take it
                yield result
                return
            if result is None or isinstance(result, (str, bytes, Mapping)):
                yield dg.Output(result)  # the IO manager names the mistake (None, a mapping...)
                return
            yield dg.Output(_split(result, events))
            yield from events  # the checks and observations, once the dataset is stored

        compute.__signature__ = _without_return(fn)  # type: ignore[attr-defined]
        kwargs = dict(asset_kwargs)
        kwargs["metadata"] = {**_code_references(fn), **(asset_kwargs.get("metadata") or {})}
        return dg.asset(**kwargs)(compute)

    return decorate(fn) if fn is not None else decorate


def _code_references(fn: Callable[..., Any]) -> dict[str, Any]:
    """``dagster/code_references`` pointing at ``fn``'s own source (not at this wrapper), for the UI."""
    try:
        path = inspect.getsourcefile(fn)
        line = inspect.getsourcelines(fn)[1]
    except (OSError, TypeError):  # defined in a REPL or notebook cell without a file
        return {}
    if not path:
        return {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # code references are a beta Dagster API
        ref = dg.CodeReferencesMetadataValue(code_references=[dg.LocalFileCodeReference(file_path=path, line_number=line)])
    return {"dagster/code_references": ref}


def dataset_multi_asset(fn: Callable[..., Any] | None = None, **multi_asset_kwargs: Any) -> Any:
    """``dg.multi_asset`` for a function that produces several datasets.

    The function returns (or ``yield``s, once) a mapping ``output name -> samples`` (each
    an iterable or generator, streamed into its own dataset in turn) and may ``yield``
    Dagster events as well, reported after the datasets are stored. ``outs`` / ``specs``
    and the other arguments are those of ``dg.multi_asset``; each output's metadata is
    checked when the definitions load. An output missing from the mapping is not
    materialized (declare ``can_subset=True`` / ``is_required=False`` for that).
    """

    def decorate(fn: Callable[..., Any]) -> dg.AssetsDefinition:
        _check_generator_or_iterable(fn, "dataset_multi_asset")
        for out_name, out in (multi_asset_kwargs.get("outs") or {}).items():
            validate_output_metadata(getattr(out, "metadata", None), out_name)
        for spec in multi_asset_kwargs.get("specs") or []:
            validate_output_metadata(getattr(spec, "metadata", None), spec.key.to_user_string())

        @functools.wraps(fn)
        def compute(*args: Any, **kwargs: Any) -> Iterator[Any]:
            events: list[Any] = []
            result = fn(*args, **kwargs)
            mapping: Any = result
            if inspect.isgenerator(result):
                mapping = None
                for item in result:
                    if isinstance(item, Mapping) and mapping is None:
                        mapping = item
                    elif isinstance(item, _EVENTS):
                        events.append(item)
                    else:
                        raise ConfigurationError(
                            f"@dataset_multi_asset {fn.__name__!r} yielded {type(item).__name__}; yield one mapping "
                            "output name -> samples (and Dagster events such as AssetCheckResult)"
                        )
            if not isinstance(mapping, Mapping):
                raise ConfigurationError(
                    f"@dataset_multi_asset {fn.__name__!r} returned {type(mapping).__name__}; return a mapping "
                    "output name -> samples, one item per dataset it produces"
                )
            for output_name, samples in mapping.items():
                yield dg.Output(_split(samples, events) if not isinstance(samples, (str, bytes, Mapping)) else samples,
                                output_name=output_name)
            yield from events

        compute.__signature__ = _without_return(fn)  # type: ignore[attr-defined]
        return dg.multi_asset(**multi_asset_kwargs)(compute)

    return decorate(fn) if fn is not None else decorate


# --------------------------------------------------------------------------- the bare-generator hint
_BARE_GENERATOR_HINT = (
    "Compute function for {op} yielded a {sample} sample, and Dagster reads what a generator yields as "
    "events, not as a dataset. Decorate it with @atdata_dagster.dataset_asset instead of @dg.asset (samples "
    "may then be yielded, and stream into shards), or keep @dg.asset and `return dg.Output(gen())` with the "
    "generator wrapped"
)


def _install_bare_generator_hint() -> bool:
    """Make Dagster's error for a yielded sample name the two fixes; ``False`` if Dagster changed.

    Dagster validates each yielded value in ``dagster._core.execution.plan.compute._validate_event``
    (no public hook exists); the wrapper only acts when that check already failed on a
    packable sample, and re-raises Dagster's own error type.
    """
    if _dagster_compute is None:  # pragma: no cover - a Dagster without this module
        return False
    original = getattr(_dagster_compute, "_validate_event", None)
    if original is None or getattr(original, "_atdata_hint", False):
        return original is not None

    def _validate_event(event: Any, step_context: Any) -> Any:
        if isinstance(event, PackableSample):
            raise dg.DagsterInvariantViolationError(
                _BARE_GENERATOR_HINT.format(op=step_context.describe_op(), sample=type(event).__name__)
            )
        return original(event, step_context)

    _validate_event._atdata_hint = True  # type: ignore[attr-defined]
    _dagster_compute._validate_event = _validate_event
    return True


BARE_GENERATOR_HINT_INSTALLED = _install_bare_generator_hint()
