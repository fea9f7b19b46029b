"""The example on ``dagster-celery``: the same definitions, one Celery task per step.

Nothing about the datasets changes: the index, the data store and the assets are the
ones in :mod:`example_project.definitions`, configured for the scale-out shape through
the environment (``ATDATA_INDEX_DSN``, ``ATDATA_S3_*``, ``AWS_*``; docs/scale-out.md).
Only the executor differs. The broker and result backend URLs come from the
environment, resolved when a run starts, so a password in them never appears in run
config, the UI or the event log:

- ``DAGSTER_CELERY_BROKER_URL``, e.g. ``redis://redis.internal:6379/0``;
- ``DAGSTER_CELERY_BACKEND_URL``, e.g. ``redis://redis.internal:6379/0``.

Start the workers with the same environment (and the same code)::

    dagster-celery worker start -A dagster_celery.app -y celery.yaml -n worker1

where ``celery.yaml`` names the same broker
(``execution: {config: {broker: {env: DAGSTER_CELERY_BROKER_URL}, backend: {env: DAGSTER_CELERY_BACKEND_URL}}}``),
then materialize as usual::

    dagster asset materialize -m example_project.celery_definitions -a defs --select digits_raw

Needs the ``celery`` extra (``pip install 'atdata-dagster[celery]'``).
"""

import dagster as dg
from dagster_celery import celery_executor

from example_project.definitions import defs as _local_defs

CELERY_EXECUTOR = celery_executor.configured(
    {"broker": {"env": "DAGSTER_CELERY_BROKER_URL"}, "backend": {"env": "DAGSTER_CELERY_BACKEND_URL"}},
    name="celery",
)

defs = dg.Definitions.merge(_local_defs, dg.Definitions(executor=CELERY_EXECUTOR))
