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

``each_backend(name)`` makes a replacement for ``authgateway_database_url`` that a plugin's
conftest assigns to that name, so that every test using the kit's gateway runs twice: on SQLite
and on a PostgreSQL database of its own beside ``TEST_DATABASE_URL``.
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
        if _in_ci():
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


def each_backend(name: str):
    """A session fixture, parametrized ``sqlite`` and ``postgresql``, for a plugin's conftest:
    ``authgateway_database_url = each_backend("acme")``. Without ``TEST_DATABASE_URL`` the
    PostgreSQL half is skipped, or fails when ``CI`` is set."""

    @pytest.fixture(scope="session", params=["sqlite", "postgresql"])
    def database_url(request, tmp_path_factory):
        from .gateway import DATABASE_ENV, migrated, postgres_database

        if request.param == "sqlite":
            yield migrated(f"sqlite:///{tmp_path_factory.mktemp(name)}/gateway.sqlite")
            return
        base = os.environ.get(DATABASE_ENV)
        if not base:
            if _in_ci():
                pytest.fail(f"{DATABASE_ENV} is required in CI")
            pytest.skip(f"set {DATABASE_ENV} to run these tests on PostgreSQL too")
        with postgres_database(base, f"authgateway_{name}_{os.getpid()}") as url:
            yield migrated(url)

    return database_url


def _in_ci() -> bool:
    """In CI a missing database is a failure: a skip there would pass what never ran."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")
