"""An app with only the Slack plugin, on each test backend (SQLite and PostgreSQL, the core's
own session fixtures), pointed at a fake Slack served over real HTTP on loopback."""

from __future__ import annotations

import authgateway_slack
import pytest

from authgateway import audit, create_app
from authgateway.extensions import db
from tests.conftest import base_config, database_url, empty_tables, postgres_url  # noqa: F401

from .fake import FakeSlack

REDIRECT_URI = "http://localhost/auth/callback/slack"


@pytest.fixture(params=[False, True], ids=["rotation-off", "rotation-on"])
def slack(request):
    with FakeSlack(rotation=request.param) as fake:
        yield fake


@pytest.fixture
def make_app(database_url, slack):  # noqa: F811
    apps = []

    def make(**overrides):
        config = base_config(database_url, PLUGINS=[authgateway_slack],
                             **slack.settings(REDIRECT_URI))
        config.update(overrides)
        app = create_app(config)
        with app.app_context():
            empty_tables()
        apps.append(app)
        return app

    yield make
    for app in apps:
        audit.served_tokens(app).flush()
        with app.app_context():
            db.engine.dispose()


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()
