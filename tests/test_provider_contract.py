"""What the contract promises a provider plugin: the one reading of token endpoint answers,
settings a provider declares, every verified email of an account, and the subject a credential
is pinned to."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from authgateway import (
    Identity,
    InvalidGrant,
    ProviderInfo,
    ProviderMisconfigured,
    ProviderUnavailable,
    TokenAnswers,
    hookimpl,
)
from authgateway.extensions import db
from authgateway.models import AuditEvent, Credential
from authgateway.standard import parse_token_answer
from tests.conftest import HEADERS
from tests.fakes import Account
from tests.flow import connect, consent, start, token

GITHUB_LIKE = ProviderInfo(
    name="gh", display_name="GH", authorize_url="https://x/a", token_url="https://x/t",
    token_answers=TokenAnswers(scope_separator=",",
                               dead_grant_errors=frozenset({"bad_refresh_token"}),
                               misconfiguration_errors=frozenset({"incorrect_client_credentials"})),
)
STANDARD = ProviderInfo(name="std", display_name="Std", authorize_url="https://x/a",
                        token_url="https://x/t")


def test_string_numbers_and_separators_are_read_as_the_provider_declares():
    tokens = parse_token_answer(GITHUB_LIKE, 200, {
        "access_token": "ghu_a", "expires_in": "28800", "refresh_token": "ghr_b",
        "refresh_token_expires_in": "15897600", "scope": "read:user,user:email",
        "token_type": "bearer"})
    assert tokens.expires_in == 28800
    assert tokens.scopes == ("read:user", "user:email")
    assert parse_token_answer(STANDARD, 200, {"access_token": "a", "scope": "a b"}).scopes == (
        "a", "b")


def test_an_answer_without_expires_in_is_a_token_that_never_expires():
    tokens = parse_token_answer(GITHUB_LIKE, 200, {"access_token": "gho_a", "scope": ""})
    assert tokens.expires_in is None and tokens.refresh_token is None and tokens.scopes == ()


def test_an_unreadable_lifetime_is_not_taken_for_never_expiring():
    with pytest.raises(ProviderUnavailable):
        parse_token_answer(STANDARD, 200, {"access_token": "a", "expires_in": "soon"})


@pytest.mark.parametrize(("status", "body", "kind", "code"), [
    (200, {"error": "bad_refresh_token"}, InvalidGrant, "bad_refresh_token"),
    (200, {"error": "incorrect_client_credentials"}, ProviderMisconfigured,
     "incorrect_client_credentials"),
    (400, {"error": "bad_refresh_token"}, InvalidGrant, "bad_refresh_token"),
    (200, {"error": "<script>"}, ProviderMisconfigured, "unreadable_error"),
    (502, None, ProviderUnavailable, "http_502"),
    (429, {"error": "bad_refresh_token"}, ProviderUnavailable, "bad_refresh_token"),
    (200, None, ProviderUnavailable, "malformed_response"),
])
def test_errors_are_classified_whatever_the_status(status, body, kind, code):
    with pytest.raises(kind) as raised:
        parse_token_answer(GITHUB_LIKE, status, body)
    assert type(raised.value) is kind and raised.value.code == code


def test_invalid_grant_is_an_operator_problem_where_the_provider_says_otherwise():
    # GitHub's dead grant is bad_refresh_token; its invalid_grant is not declared dead.
    with pytest.raises(ProviderMisconfigured):
        parse_token_answer(GITHUB_LIKE, 400, {"error": "invalid_grant"})
    with pytest.raises(InvalidGrant):
        parse_token_answer(STANDARD, 400, {"error": "invalid_grant"})


class NeedsATenant:
    @hookimpl
    def authgateway_register_providers(self, settings):
        return [ProviderInfo(name="acme", display_name="Acme", authorize_url="https://x/a",
                             token_url="https://x/t", required_settings=("ACME_TENANT",))]


def test_providers_list_names_the_settings_a_provider_declares(make_app):
    import authgateway_google

    app = make_app(PLUGINS=[authgateway_google, NeedsATenant()], ACME_CLIENT_ID="c",
                   ACME_CLIENT_SECRET="s", ACME_REDIRECT_URI="https://gw/cb")
    listed = app.test_cli_runner().invoke(args=["providers", "list"])
    assert "NOT CONFIGURED: set ACME_TENANT" in listed.output
    app = make_app(PLUGINS=[authgateway_google, NeedsATenant()], ACME_CLIENT_ID="c",
                   ACME_CLIENT_SECRET="s", ACME_REDIRECT_URI="https://gw/cb", ACME_TENANT="t1")
    with app.app_context():
        config = app.extensions["authgateway"].providers.config("acme")
    assert config.settings == {"ACME_TENANT": "t1"}


class EveryVerifiedEmail:
    """Google as a provider that lists every verified address besides its own email."""

    def __init__(self, emails):
        self.emails = emails

    @hookimpl
    def authgateway_register_providers(self, settings):
        import authgateway_google

        return authgateway_google.authgateway_register_providers(settings)

    @hookimpl
    def authgateway_fetch_identity(self, provider, config, tokens):
        return Identity(subject="42", email="work@example.com", email_verified=True,
                        verified_emails=tuple(self.emails))


def test_a_flow_is_accepted_for_any_verified_email_of_the_account(make_app, google):
    app = make_app(PLUGINS=[EveryVerifiedEmail(["Ada@Example.com"])])
    client = app.test_client()
    connect(client, "ada@example.com")
    assert token(client).status_code == 200
    flow = start(client, "bob@example.com")
    assert client.get(consent(flow["auth_url"])).status_code == 403


def _status(client, flow):
    return client.get(f"/auth/status/{flow['session_id']}", headers=HEADERS).get_json()


def test_another_subject_for_the_same_user_fails_with_account_mismatch(app, client, google):
    google.next_account = Account(email="ada@example.com", sub="111")
    connect(client)
    first = token(client).get_json()["access_token"]

    google.next_account = Account(email="ada@example.com", sub="222")
    flow = start(client)
    page = client.get(consent(flow["auth_url"]))
    assert page.status_code == 400 and "account_mismatch" in page.get_data(as_text=True)
    status = _status(client, flow)
    assert (status["status"], status["error"]) == ("failed", "account_mismatch")
    assert token(client).get_json()["access_token"] == first
    with app.app_context():
        assert db.session.scalar(select(Credential.subject)) == "111"
        assert db.session.scalar(select(func.count()).select_from(AuditEvent).where(
            AuditEvent.action == "flow_failed", AuditEvent.outcome == "account_mismatch")) == 1


def test_the_same_subject_again_and_another_after_revocation_are_accepted(app, client, google):
    google.next_account = Account(email="ada@example.com", sub="111")
    connect(client)
    google.next_account = Account(email="ada@example.com", sub="111")
    connect(client)
    client.delete("/auth/revoke", json={"provider": "google", "user_email": "ada@example.com"},
                  headers=HEADERS)
    google.next_account = Account(email="ada@example.com", sub="222")
    connect(client)
    with app.app_context():
        assert db.session.scalar(select(Credential.subject)) == "222"
