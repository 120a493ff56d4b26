"""The account object a plugin returns beside the tokens (Slack's team, Microsoft's tenant): stored
with the credential when a flow completes, replaced by a refresh that brings one and kept by one
that does not, returned by /auth/token and /auth/providers/{email}, and absent for a provider
that has none. On both backends (the database_url fixture)."""

from __future__ import annotations

import dataclasses

import authgateway_google
import pytest
from sqlalchemy import select

from authgateway import Identity, hookimpl, standard
from authgateway.extensions import db
from authgateway.models import Credential
from tests.conftest import HEADERS
from tests.flow import connect, token

TEAM = {"team_id": "T0123ABCD", "team_name": "Example Inc",
        "sites": [{"id": "s1", "url": "https://example.atlassian.net"}]}


class WithAccount:
    """Google as a provider whose answers carry an account object: ``exchange`` in the code
    exchange's TokenSet, ``identity`` in the Identity, ``refreshed`` in each refresh's."""

    def __init__(self, exchange=None, identity=None, refreshed=None):
        self.exchange, self.identity, self.refreshed = exchange, identity, refreshed

    @hookimpl
    def authgateway_register_providers(self, settings):
        return authgateway_google.authgateway_register_providers(settings)

    @hookimpl
    def authgateway_exchange_code(self, provider, config, code, code_verifier):
        tokens = standard.exchange_code(provider, config, code, code_verifier)
        return dataclasses.replace(tokens, account=self.exchange)

    @hookimpl
    def authgateway_refresh_token(self, provider, config, refresh_token):
        tokens = standard.refresh_token(provider, config, refresh_token)
        return dataclasses.replace(tokens, account=self.refreshed)

    @hookimpl
    def authgateway_fetch_identity(self, provider, config, tokens):
        return Identity(subject="42", email="ada@example.com", email_verified=True,
                        account=self.identity)


def listed(client, email="ada@example.com") -> dict:
    answer = client.get(f"/auth/providers/{email}", headers=HEADERS)
    assert answer.status_code == 200
    return answer.get_json()["providers"][0]


def stored_account(app):
    with app.app_context():
        return db.session.scalars(select(Credential.account)).one()


def test_the_account_is_stored_at_the_callback_and_returned_with_the_token(make_app):
    app = make_app(PLUGINS=[WithAccount(exchange=TEAM)])
    client = app.test_client()
    connect(client)
    answer = token(client)
    assert answer.status_code == 200
    assert answer.get_json()["account"] == TEAM
    assert listed(client)["account"] == TEAM
    assert stored_account(app) == TEAM


def test_the_identitys_account_is_merged_over_the_token_answers(make_app):
    plugin = WithAccount(exchange={"team_id": "T1", "team_name": "old"},
                         identity={"team_name": "Example Inc", "user_id": "U1"})
    app = make_app(PLUGINS=[plugin])
    client = app.test_client()
    connect(client)
    assert token(client).get_json()["account"] == {"team_id": "T1", "team_name": "Example Inc",
                                                   "user_id": "U1"}


def test_a_refresh_with_an_account_replaces_it_and_one_without_keeps_it(make_app):
    plugin = WithAccount(exchange=TEAM)
    app = make_app(PLUGINS=[plugin])
    client = app.test_client()
    connect(client)
    plugin.refreshed = {"team_id": "T0123ABCD", "team_name": "Renamed Inc"}
    answer = token(client, force_refresh=True)
    assert answer.status_code == 200
    assert answer.get_json()["account"] == plugin.refreshed  # the refreshed answer itself
    assert token(client).get_json()["account"] == plugin.refreshed  # and as stored
    plugin.refreshed = None
    answer = token(client, force_refresh=True)
    assert answer.status_code == 200
    assert answer.get_json()["account"] == {"team_id": "T0123ABCD", "team_name": "Renamed Inc"}
    assert listed(client)["account"] == {"team_id": "T0123ABCD", "team_name": "Renamed Inc"}


def test_a_new_flow_replaces_the_account_of_the_grant_it_replaces(make_app):
    plugin = WithAccount(exchange=TEAM)
    app = make_app(PLUGINS=[plugin])
    client = app.test_client()
    connect(client)
    plugin.exchange = {"team_id": "T0123ABCD", "team_name": "Example Inc"}
    connect(client)
    assert token(client).get_json()["account"] == plugin.exchange
    plugin.exchange = None
    connect(client)
    assert "account" not in token(client).get_json()
    assert stored_account(app) is None


@pytest.mark.parametrize("plugins", [None, [WithAccount()]], ids=["google", "none returned"])
def test_without_an_account_nothing_changes_on_the_wire(make_app, plugins):
    """No "account" key at all, not a null: callers of providers without one see the answers
    they always saw."""
    app = make_app(**({"PLUGINS": plugins} if plugins else {}))
    client = app.test_client()
    connect(client)
    answer = token(client)
    assert answer.status_code == 200
    assert set(answer.get_json()) == {"access_token", "token_type", "expires_at", "scopes"}
    assert "account" not in listed(client)
    assert token(client, force_refresh=True).status_code == 200
    assert "account" not in token(client).get_json()
    # SQL NULL, not a JSON null: a query for credentials without an account finds it.
    with app.app_context():
        assert db.session.scalars(select(Credential.id).where(
            Credential.account.is_(None))).all() != []


def test_the_account_survives_a_needs_reauth_listing(make_app, google):
    """A dead grant's credential still says which team it was."""
    app = make_app(PLUGINS=[WithAccount(exchange=TEAM)])
    client = app.test_client()
    connect(client)
    google.revoke_grant_for("ada@example.com")
    assert token(client, force_refresh=True).status_code == 401
    entry = listed(client)
    assert entry["status"] == "needs_reauth" and entry["account"] == TEAM
