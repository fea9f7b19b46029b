"""Shared pytest configuration.

Service fixtures live in ``tests/fixtures/`` (one module per service) and are
registered here. Under CI (``CI=true``) a test that needs a service which is missing
fails instead of skipping: see ``tests/fixtures/services.py``.
"""

pytest_plugins = [
    "tests.fixtures.services",
    "tests.fixtures.s3",
    "tests.fixtures.pds",
]
