"""The kit's pytest fixtures, registered with pytest through the ``pytest11`` entry point.

Loading this module does nothing: it imports nothing of the gateway and only defines fixtures
whose names start with ``authgateway_``, so a test session that requests none of them (the
core's own, any project that merely has authgateway installed) is untouched.

- ``authgateway_database_url`` (session): a migrated throwaway database: SQLite in a temporary
  directory, or a new PostgreSQL database beside ``TEST_DATABASE_URL`` when that is set
  (dropped at the end; unreachable is a failure when ``CI`` is set, a skip otherwise).
- ``authgateway_gateway``: a factory, ``authgateway_gateway(plugins, **settings)``, returning an
  ``authgateway.testing.Gateway`` whose tables start empty; closed at teardown.
- ``authgateway_fake_provider``: a started ``authgateway.testing.FakeProvider`` with default
  settings, for tests that need no scripting.
"""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def authgateway_database_url(tmp_path_factory):
    from .gateway import DATABASE_ENV, migrated, throwaway_database

    try:
        database = throwaway_database(str(tmp_path_factory.mktemp("authgateway")))
        url = database.__enter__()
    except Exception as exc:  # psycopg.OperationalError, without importing psycopg here
        message = f"{DATABASE_ENV} is set but its PostgreSQL is unreachable: {exc}"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield migrated(url)
    finally:
        database.__exit__(None, None, None)


@pytest.fixture
def authgateway_gateway(authgateway_database_url):
    from contextlib import ExitStack

    from .gateway import build_gateway

    with ExitStack() as stack:
        def make(plugins, **settings):
            return stack.enter_context(build_gateway(authgateway_database_url, plugins,
                                                     **settings))

        yield make


@pytest.fixture
def authgateway_fake_provider():
    from .fake import FakeProvider

    with FakeProvider() as fake:
        yield fake
