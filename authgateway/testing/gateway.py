"""A gateway app for a plugin's tests, on a throwaway database, and a client that drives the
flows a person and an MCP server drive."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from urllib.parse import parse_qs, urlsplit

import requests
from cryptography.fernet import Fernet
from sqlalchemy import delete

from .. import audit
from ..app import build_app as create_app
from ..extensions import db

__all__ = ["API_KEY", "Gateway", "build_gateway", "migrated", "postgres_database", "redirect_uri",
           "throwaway_database"]

API_KEY = "authgateway-testing-api-key"
DATABASE_ENV = "TEST_DATABASE_URL"


def redirect_uri(provider: str) -> str:
    """The callback URL the kit's gateway registers for ``provider``."""
    return f"http://localhost/auth/callback/{provider}"


@contextmanager
def throwaway_database(directory: str) -> Iterator[str]:
    """A database URL that lives for the block: a new PostgreSQL database beside
    ``TEST_DATABASE_URL`` when that is set (dropped afterwards), else SQLite in ``directory``."""
    base = os.environ.get(DATABASE_ENV)
    if not base:
        yield f"sqlite:///{directory}/authgateway-testing.sqlite"
        return
    with postgres_database(base, f"authgateway_kit_{os.getpid()}") as url:
        yield url


@contextmanager
def postgres_database(base: str, name: str) -> Iterator[str]:
    """A new, empty PostgreSQL database ``name`` on the server of ``base``, dropped after the
    block (and before it, should a killed run have left one behind)."""
    import psycopg

    server = urlsplit(base)
    admin_url = server._replace(path="/postgres").geturl()
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield server._replace(path="/" + name).geturl()
    finally:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def gateway_config(database_url: str, plugins: Iterable[object], **settings) -> dict:
    return {
        "DATABASE_URL": database_url,
        "ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "API_KEY": API_KEY,
        "LOAD_PLUGINS": False,
        "PLUGINS": list(plugins),
        "PROVIDER_TIMEOUT": 2,
        "LOG_LEVEL": "DEBUG",  # so a test of what is logged sees everything
        # Flushed at teardown instead, so no timer writes into the next test's tables.
        "AUDIT_FLUSH_SECONDS": 3600,
        **settings,
    }


def migrated(database_url: str) -> str:
    """Bring the database to the current schema, as ``flask db upgrade`` does."""
    from flask_migrate import upgrade

    app = create_app(gateway_config(database_url, []))
    with app.app_context():
        upgrade()
        db.engine.dispose()
    return database_url


@contextmanager
def build_gateway(database_url: str, plugins: Iterable[object], **settings) -> Iterator[Gateway]:
    """A gateway with only ``plugins`` loaded, on a migrated database whose tables start empty.
    ``settings`` are the app's (``ACME_CLIENT_ID=...``, ``PROVIDER_TIMEOUT=...``)."""
    app = create_app(gateway_config(database_url, plugins, **settings))
    with app.app_context():
        for table in reversed(db.metadata.sorted_tables):
            db.session.execute(delete(table))
        db.session.commit()
    try:
        yield Gateway(app)
    finally:
        audit.served_tokens(app).flush()
        with app.app_context():
            db.engine.dispose()


class Gateway:
    """The app and a test client holding the API key; each method is one call a person or an
    MCP server makes, and returns what they would see."""

    def __init__(self, app) -> None:
        self.app = app
        self.client = app.test_client()
        self.headers = {"X-API-Key": API_KEY}

    def start(self, provider: str, email: str, **extra) -> dict:
        """POST /auth/init; returns its answer (``auth_url``, ``session_id``)."""
        answer = self.client.post("/auth/init", headers=self.headers,
                                  json={"provider": provider, "user_email": email, **extra})
        assert answer.status_code == 200, answer.get_json()
        return answer.get_json()

    def consent(self, auth_url: str):
        """The person at the provider: follows ``auth_url`` (the provider answers with a
        redirect) and brings the redirect to the gateway's callback; returns the page."""
        answer = requests.get(auth_url, allow_redirects=False, timeout=10)
        assert answer.status_code in (302, 303), (answer.status_code, answer.text[:200])
        location = urlsplit(answer.headers["Location"])
        return self.client.get(f"{location.path}?{location.query}")

    def connect(self, provider: str, email: str) -> dict:
        """A whole successful flow; returns the init answer."""
        flow = self.start(provider, email)
        page = self.consent(flow["auth_url"])
        assert page.status_code == 200, page.get_data(as_text=True)[:500]
        return flow

    def status(self, flow: dict) -> dict:
        return self.client.get(f"/auth/status/{flow['session_id']}",
                               headers=self.headers).get_json()

    def token(self, provider: str, email: str, **extra):
        """POST /auth/token; returns the response (``.status_code``, ``.get_json()``)."""
        return self.client.post("/auth/token", headers=self.headers,
                                json={"provider": provider, "user_email": email, **extra})

    def revoke(self, provider: str, email: str):
        return self.client.delete("/auth/revoke", headers=self.headers,
                                  json={"provider": provider, "user_email": email})

    def connections(self, email: str) -> dict[str, dict]:
        """The user's credentials by provider, as GET /auth/providers/{email} lists them."""
        listed = self.client.get(f"/auth/providers/{email}", headers=self.headers).get_json()
        return {entry["provider"]: entry for entry in listed["providers"]}


def query_of(url: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}
