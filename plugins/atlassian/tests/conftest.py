"""Every test here runs on SQLite and on PostgreSQL: the kit's gateway fixture
(``authgateway_gateway``) is handed each backend in turn. PostgreSQL is a new database beside
``TEST_DATABASE_URL``, dropped at the end; without that setting its half is skipped (a failure
when ``CI`` is set)."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import psycopg
import pytest

from authgateway.testing.gateway import migrated

NAME = "atlassian"


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def authgateway_database_url(request, tmp_path_factory):
    if request.param == "sqlite":
        yield migrated(f"sqlite:///{tmp_path_factory.mktemp(NAME)}/gateway.sqlite")
        return
    base = os.environ.get("TEST_DATABASE_URL")
    if not base:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("TEST_DATABASE_URL is required in CI")
        pytest.skip("set TEST_DATABASE_URL to run these tests on PostgreSQL too")
    server = urlsplit(base)
    admin_url = server._replace(path="/postgres").geturl()
    database = f"authgateway_{NAME}_{os.getpid()}"
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{database}"')
    try:
        yield migrated(server._replace(path="/" + database).geturl())
    finally:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
