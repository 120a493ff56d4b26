"""The schema comes from the migrations alone, and they agree with the models."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from cryptography.fernet import Fernet
from sqlalchemy import inspect, text

from authgateway import create_app
from authgateway.extensions import db
from authgateway.models import (
    render_item,  # noqa: F401  (the same hook autogenerate uses)
    utcnow,
)
from tests.conftest import base_config, empty_postgres_database

TABLES = {"credentials", "auth_sessions", "api_keys", "audit_events", "alembic_version"}


def test_models_and_migrations_agree(app):
    """Fails when a model changes without a migration (run `flask db migrate`)."""
    with app.app_context(), db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, db.metadata) == []


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/empty.sqlite"
        return
    with empty_postgres_database(request.getfixturevalue("postgres_url"), "empty") as url:
        yield url


@pytest.mark.parametrize("command", [["db", "upgrade"], ["init-db"]])
def test_the_cli_builds_the_schema_on_an_empty_database(empty_database, command):
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": empty_database,
           "AUTH_GATEWAY_ENCRYPTION_KEY": Fernet.generate_key().decode()}
    flask = str(Path(sys.executable).parent / "flask")
    for _ in range(2):  # the second run finds nothing to do
        out = subprocess.run([flask, "--app", "authgateway", *command], env=env,
                             capture_output=True, text=True, timeout=120,
                             cwd="/")  # the migrations are found without being in the tree
        assert out.returncode == 0, out.stderr
    app = create_app(base_config(empty_database))
    with app.app_context():
        assert TABLES <= set(inspect(db.engine).get_table_names())
        db.engine.dispose()


def test_the_failure_kind_is_filled_in_for_credentials_that_failed_before_it_was_stored(
    empty_database,
):
    """Migration 0003 classifies each recorded failure once, as the code string was read until
    then, so that a credential whose provider refused the client stays 'misconfigured'."""
    from flask_migrate import upgrade

    app = create_app(base_config(empty_database))
    codes = {"invalid_client": "misconfigured", "http_401": "misconfigured",
             "http_429": "unavailable", "timeout": "unavailable", None: None}
    with app.app_context():
        upgrade(revision="0002")
        with db.engine.begin() as connection:
            for number, code in enumerate(codes):
                connection.execute(text(
                    "INSERT INTO credentials (user_email, provider, scopes, status, "
                    "authenticated_at, refresh_failures, last_error, created_at, updated_at) "
                    "VALUES (:email, 'google', '', 'active', :now, 1, :code, :now, :now)"),
                    {"email": f"u{number}@example.com", "code": code, "now": utcnow()})
            connection.execute(text(
                "INSERT INTO credentials (user_email, provider, scopes, status, authenticated_at,"
                " refresh_failures, last_error, created_at, updated_at) VALUES ('dead@example.com'"
                ", 'google', '', 'needs_reauth', :now, 1, 'invalid_grant', :now, :now)"),
                {"now": utcnow()})
        upgrade()
        with db.engine.connect() as connection:
            kinds = dict(connection.execute(text(
                "SELECT last_error, last_error_kind FROM credentials WHERE status = 'active'")
            ).all())
            dead = connection.execute(text(
                "SELECT last_error_kind FROM credentials WHERE status = 'needs_reauth'")).scalar()
        db.engine.dispose()
    assert kinds == codes
    assert dead == "invalid_grant"
