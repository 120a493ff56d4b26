"""An app with only the GitHub plugin, on each test backend (SQLite and PostgreSQL, the core's
own session fixtures), pointed at a fake GitHub served over real HTTP on loopback."""

from __future__ import annotations

import authgateway_github
import pytest

from tests.conftest import app_maker, base_config, database_url, postgres_url  # noqa: F401
from tests.fakes.github import FakeGitHub

REDIRECT_URI = "http://localhost/auth/callback/github"


@pytest.fixture
def github():
    with FakeGitHub() as fake:
        yield fake


@pytest.fixture
def make_app(database_url, github):  # noqa: F811
    def config_for(redirect_uri: str = REDIRECT_URI, **overrides):
        return {**base_config(database_url, PLUGINS=[authgateway_github],
                              **github.settings(redirect_uri)), **overrides}

    with app_maker(config_for) as make:
        yield make


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()
