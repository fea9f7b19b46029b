"""Shared pytest configuration.

Service fixtures live in ``tests/fixtures/`` (one module per service) and are
registered here. Under CI (``CI=true``) a test that needs a service which is missing
fails instead of skipping: see ``tests/fixtures/services.py``.
"""

import signal

pytest_plugins = [
    "tests.fixtures.services",
    "tests.fixtures.s3",
    "tests.fixtures.pds",
]


def _keep_termination_signals_deliverable() -> None:
    """Undo an inherited or Dagster-made ``SIG_IGN`` for SIGINT/SIGTERM in this process.

    A suite started in the background (CI runners, ``make test &``) inherits SIGINT
    ignored, and every in-process Dagster run maps SIGTERM to SIGINT's handler
    (``dagster._utils.interrupts.setup_interrupt_handlers``), so SIGTERM ends up ignored
    too: ``multiprocessing.Pool.terminate()`` then hangs on idle workers, and the servers
    the fixtures start (which inherit ignored signals across exec) ignore their stop signal.
    """
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if signal.getsignal(signal.SIGTERM) == signal.SIG_IGN:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


_keep_termination_signals_deliverable()


def pytest_runtest_teardown(item, nextitem):
    _keep_termination_signals_deliverable()
