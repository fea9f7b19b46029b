"""Check a whole ``dg.Definitions`` against its atdata IO managers when it loads.

``@dataset_asset`` checks its own ``atdata/*`` metadata at decoration time, but a plain
``@dg.asset`` only meets the IO manager when it runs, and whether ``atdata/repo`` names
a mounted repository depends on the index resource, which only the ``Definitions``
knows. :func:`validate_definitions` closes both gaps: wrap your definitions in it and a
typo (``atdata/maxcont``), a wrong kind (``atdata/maxcount="ten"``), a bad input option
(``AssetIn(metadata={"columns": "label"})``) or an unknown repository stops the code
location from loading, naming the asset, instead of failing the first run::

    defs = validate_definitions(dg.Definitions(assets=[...], resources={"io_manager": AtdataIOManager(index=index)}))

Nothing is opened: no database, bucket or network is touched.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from .errors import ConfigurationError
from .io_manager import AtdataIOManager
from .resolution import InputSettings, validate_output_metadata
from .resources import AtdataIndexResource

__all__ = ["validate_definitions"]


def _repositories(io_manager: AtdataIOManager) -> set[str] | None:
    """The repository names ``io_manager`` can write to, or None when its index is not known yet."""
    index: Any = io_manager.index
    if not isinstance(index, AtdataIndexResource):  # a ResourceDependency bound later
        return None
    return {"local", *index.repos}


def _check_output(io_manager: AtdataIOManager, key: dg.AssetKey, metadata: Any) -> None:
    validate_output_metadata(metadata, key)
    settings = io_manager.output_settings(metadata, key)
    repos = _repositories(io_manager)
    if repos is not None and settings.repo not in repos:
        raise ConfigurationError(
            f"asset {key.to_user_string()!r}: 'atdata/repo' is {settings.repo!r}, which the index does not mount; "
            f"mounted repositories: {sorted(repos)} (add it to AtdataIndexResource.repos, or fix the name)"
        )


def validate_definitions(defs: dg.Definitions) -> dg.Definitions:
    """Check every asset stored by an :class:`AtdataIOManager` in ``defs``; return ``defs`` unchanged.

    For each asset output whose IO manager (by its ``io_manager_key``) is an
    ``AtdataIOManager``: the ``atdata/*`` metadata keys and value kinds
    (``OUTPUT_METADATA_KEYS``), and that ``atdata/repo`` (or
    the IO manager's default ``repo``) is ``local`` or one of the index's ``repos``. For each
    input it loads: its ``AssetIn`` metadata (``columns``, ``allow_missing_partitions``).

    Raises :class:`~atdata_dagster.errors.ConfigurationError` (or its
    ``ConfigurationTypeError`` subclass) naming the asset and what to change.
    """
    resources = defs.resources or {}
    managers = {k: v for k, v in resources.items() if isinstance(v, AtdataIOManager)}
    if not managers:
        return defs
    assets = [a for a in defs.assets or [] if isinstance(a, dg.AssetsDefinition)]
    # asset key -> the IO manager key that stores it (and loads it for its downstream assets)
    stored_by = {
        key: a.node_def.output_def_named(a.get_output_name_for_asset_key(key)).io_manager_key
        for a in assets for key in a.keys
    }
    for assets_def in assets:
        if not assets_def.is_executable:
            continue
        for key in assets_def.keys:
            manager = managers.get(stored_by[key])
            if manager is not None:
                _check_output(manager, key, assets_def.specs_by_key[key].metadata)
        for name, upstream in assets_def.keys_by_input_name.items():
            input_def = assets_def.node_def.input_def_named(name)
            if (input_def.input_manager_key or stored_by.get(upstream)) in managers:
                InputSettings.parse(input_def.metadata, upstream)
    return defs
