"""An app with only the Slack plugin, on each test backend (SQLite and PostgreSQL, the core's
own session fixtures), pointed at a fake Slack served over real HTTP on loopback."""

from __future__ import annotations

import authgateway_slack
import pytest

from tests.conftest import app_maker, base_config, database_url, postgres_url  # noqa: F401

from .fake import FakeSlack

REDIRECT_URI = "http://localhost/auth/callback/slack"


@pytest.fixture(params=[False, True], ids=["rotation-off", "rotation-on"])
def slack(request):
    with FakeSlack(rotation=request.param) as fake:
        yield fake


@pytest.fixture
def make_app(database_url, slack):  # noqa: F811
    def config_for(**overrides):
        return {**base_config(database_url, PLUGINS=[authgateway_slack],
                              **slack.settings(REDIRECT_URI)), **overrides}

    with app_maker(config_for) as make:
        yield make


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()
