"""The generic OAuth 2.0 plugin: settings in (every wrong one stops startup with a sentence
naming it), a provider out, and who signed in read at the configured JSON pointers."""

from __future__ import annotations

import importlib.metadata
import re
from urllib.parse import parse_qs, urlsplit

import authgateway_oauth2
import pytest
from cryptography.fernet import Fernet

from authgateway import create_app
from authgateway.config import Settings
from authgateway.errors import ConfigError
from authgateway.testing import Account, redirect_uri

from .test_oauth2_conformance import acme_fake, acme_settings

EMAIL = "ada@example.com"
PLUGINS = [authgateway_oauth2]
URLS = {"ACME_AUTHORIZE_URL": "https://acme.example/oauth/authorize",
        "ACME_TOKEN_URL": "https://acme.example/oauth/token",
        "ACME_USERINFO_URL": "https://api.acme.example/me"}


def declared(**settings):
    return authgateway_oauth2.authgateway_register_providers(settings=Settings(settings, {}))


@pytest.fixture
def acme():
    with acme_fake() as fake:
        fake.sign_in_as(Account(subject="4242", email=EMAIL))
        yield fake


@pytest.fixture
def make_gateway(authgateway_gateway, acme):
    def make(**settings):
        return authgateway_gateway(PLUGINS, **acme_settings(acme, redirect_uri("acme"),
                                                            **settings))
    return make


def attempt(gateway):
    flow = gateway.start("acme", EMAIL)
    page = gateway.consent(flow["auth_url"])
    return page, gateway.status(flow)


# ---- the distribution and its settings ----------------------------------------------------

def test_the_distribution_registers_its_entry_point():
    points = [p for p in importlib.metadata.entry_points(group="authgateway")
              if p.name == "oauth2"]
    assert len(points) == 1 and points[0].dist.name == "authgateway-oauth2"
    assert points[0].load() is authgateway_oauth2


def test_nothing_is_declared_until_a_provider_is_listed():
    assert declared() == []


def test_a_listed_provider_is_declared_with_defaults_and_providers_list_shows_it(tmp_path):
    (info,) = declared(OAUTH2_PROVIDERS=" Acme ,acme", **URLS)
    assert (info.name, info.display_name) == ("acme", "Acme")
    assert (info.authorize_url, info.token_url, info.userinfo_url) == tuple(URLS.values())
    assert info.revoke_url is None and info.send_login_hint is False
    assert info.client_auth_method == "client_secret_basic"
    assert info.token_answers.scope_separator is None
    assert (info.subject_pointer, info.email_pointer, info.email_verified_pointer) == \
        ("/sub", "/email", "/email_verified")
    assert info.trust_unverified_email is False
    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path}/o.sqlite", "LOAD_PLUGINS": True,
                      "ENCRYPTION_KEY": Fernet.generate_key().decode(),
                      "OAUTH2_PROVIDERS": "acme", **URLS})
    listed = app.test_cli_runner().invoke(args=["providers", "list"]).output
    line = next(line for line in listed.splitlines() if line.startswith("acme"))
    assert "plugin=oauth2" in line
    assert "NOT CONFIGURED: set ACME_CLIENT_ID, ACME_CLIENT_SECRET, ACME_REDIRECT_URI" in line


@pytest.mark.parametrize(("settings", "named"), [
    ({"OAUTH2_PROVIDERS": "my-idp"}, "AUTH_GATEWAY_OAUTH2_PROVIDERS lists 'my-idp'"),
    ({"ACME_AUTHORIZE_URL": ""}, "ACME_AUTHORIZE_URL is not set"),
    ({"ACME_TOKEN_URL": None}, "ACME_TOKEN_URL is not set"),
    ({"ACME_USERINFO_URL": None}, "ACME_USERINFO_URL is not set"),
    ({"ACME_TOKEN_URL": "acme.example/token"}, "ACME_TOKEN_URL is 'acme.example/token'"),
    ({"ACME_REVOKE_URL": "ftp://acme.example/revoke"}, "ACME_REVOKE_URL is"),
    ({"ACME_CLIENT_AUTH_METHOD": "private_key_jwt"}, "ACME_CLIENT_AUTH_METHOD is"),
    ({"ACME_SCOPE_SEPARATOR": ";"}, "ACME_SCOPE_SEPARATOR is"),
    ({"ACME_IDENTITY": "anything"}, "ACME_IDENTITY is"),
    ({"ACME_SUBJECT_POINTER": "id"}, "ACME_SUBJECT_POINTER is 'id'"),
    ({"ACME_EMAIL_POINTER": "/user/~2"}, "ACME_EMAIL_POINTER is"),
    ({"ACME_REVOKE_REPLACED_GRANTS": "sometimes"}, "ACME_REVOKE_REPLACED_GRANTS is"),
])
def test_a_wrong_or_missing_setting_stops_startup_with_a_sentence_naming_it(settings, named):
    config = {"OAUTH2_PROVIDERS": "acme", **URLS, **settings}
    with pytest.raises(ConfigError, match=named) as raised:
        declared(**{key: value for key, value in config.items() if value is not None})
    message = str(raised.value)
    assert message.endswith(".") and not re.search(r"[.:]\s+[A-Z]", message)  # one sentence


def test_the_app_does_not_start_with_a_wrong_setting(tmp_path):
    with pytest.raises(ConfigError, match="ACME_USERINFO_URL is not set"):
        create_app({"DATABASE_URL": f"sqlite:///{tmp_path}/o.sqlite", "LOAD_PLUGINS": False,
                    "PLUGINS": PLUGINS, "ENCRYPTION_KEY": Fernet.generate_key().decode(),
                    "OAUTH2_PROVIDERS": "acme", "ACME_AUTHORIZE_URL": URLS["ACME_AUTHORIZE_URL"],
                    "ACME_TOKEN_URL": URLS["ACME_TOKEN_URL"]})


@pytest.mark.parametrize(("pointer", "value"), [
    ("/data/id", 7), ("/a~1b/c~0d", "x"), ("/list/1/mail", "m@example.com"), ("/list/01", None),
    ("/list/9", None), ("/missing/deeper", None), ("/data/id/x", None),
])
def test_json_pointers_are_read_as_rfc_6901_says(pointer, value):
    document = {"data": {"id": 7}, "a/b": {"c~d": "x"},
                "list": [{"mail": "z"}, {"mail": "m@example.com"}]}
    assert authgateway_oauth2.resolve(document, pointer) == value


# ---- flows --------------------------------------------------------------------------------

def test_the_authorize_url_asks_for_the_configured_scopes_without_login_hint(make_gateway):
    flow = make_gateway().start("acme", EMAIL)
    query = parse_qs(urlsplit(flow["auth_url"]).query)
    assert query["scope"] == ["profile email"] and "login_hint" not in query
    assert query["code_challenge_method"] == ["S256"]


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_the_configured_client_authentication_is_used(make_gateway, acme, method):
    gateway = make_gateway(ACME_CLIENT_AUTH_METHOD=method)
    assert attempt(gateway)[0].status_code == 200
    answer = gateway.token("acme", EMAIL).get_json()
    assert answer["scopes"] == ["profile", "email"]  # read from "profile,email"


def test_an_unverified_email_is_refused_with_a_page_that_says_why(make_gateway, acme):
    acme.sign_in_as(Account(subject="4242", email=EMAIL, email_verified=False))
    gateway = make_gateway()
    page, status = attempt(gateway)
    assert page.status_code == 403 and status["error"] == "email_mismatch"
    assert "does not say that this account&#39;s email address is verified" in \
        page.get_data(as_text=True)
    assert gateway.connections(EMAIL) == {}


def test_identity_email_accepts_an_unverified_email(make_gateway, acme):
    acme.sign_in_as(Account(subject="4242", email=EMAIL, email_verified=False))
    gateway = make_gateway(ACME_IDENTITY="email")
    page, _ = attempt(gateway)
    assert page.status_code == 200, page.get_data(as_text=True)
    assert gateway.connections(EMAIL)["acme"]["status"] == "active"


def test_identity_email_still_refuses_another_address(make_gateway, acme):
    acme.sign_in_as(Account(subject="4242", email="mallory@example.com", email_verified=False))
    page, status = attempt(make_gateway(ACME_IDENTITY="email"))
    assert page.status_code == 403 and status["error"] == "email_mismatch"


def test_a_pointer_that_finds_no_subject_fails_the_flow(make_gateway):
    page, status = attempt(make_gateway(ACME_SUBJECT_POINTER="/data/uuid"))
    assert page.status_code == 502 and status["error"] == "identity_unverified"


def test_without_a_revocation_endpoint_revocation_deletes_here_only(make_gateway, acme):
    gateway = make_gateway(ACME_REVOKE_URL="")
    gateway.connect("acme", EMAIL)
    answer = gateway.revoke("acme", EMAIL)
    assert answer.status_code == 200 and answer.get_json()["provider_revoked"] is False
    assert acme.revoked == [] and gateway.connections(EMAIL) == {}


# ---- replaced grants ------------------------------------------------------------------------

def grant_events(gateway) -> list[tuple[str, str]]:
    from sqlalchemy import select

    from authgateway.extensions import db
    from authgateway.models import AuditEvent

    with gateway.app.app_context():
        return [(e.action, e.outcome) for e in db.session.scalars(
            select(AuditEvent).where(AuditEvent.action.in_(("grant_replaced", "revoked")))
            .order_by(AuditEvent.id))]


def test_a_replaced_grant_is_revoked_when_asked(make_gateway, acme):
    """Three flows for one user leave one live grant at the provider, the stored one; a
    revocation then leaves none, and says so truthfully."""
    gateway = make_gateway(ACME_REVOKE_REPLACED_GRANTS="true")
    for _ in range(3):
        gateway.connect("acme", EMAIL)
    assert acme.live_grants() == 1
    answer = gateway.token("acme", EMAIL)
    assert answer.status_code == 200 and acme.token_is_live(answer.get_json()["access_token"])
    assert grant_events(gateway) == [("grant_replaced", "ok")] * 2
    revoked = gateway.revoke("acme", EMAIL)
    assert revoked.status_code == 200 and revoked.get_json()["provider_revoked"] is True
    assert acme.live_grants() == 0


def test_replaced_grants_stay_live_by_default(make_gateway, acme):
    gateway = make_gateway()
    for _ in range(3):
        gateway.connect("acme", EMAIL)
    assert acme.live_grants() == 3 and grant_events(gateway) == []


def test_a_failed_revocation_of_a_replaced_grant_does_not_fail_the_flow(make_gateway, acme):
    gateway = make_gateway(ACME_REVOKE_REPLACED_GRANTS="true")
    gateway.connect("acme", EMAIL)
    acme.routes[("POST", "/oauth/revoke")] = lambda request: (503, {"error": "unavailable"})
    gateway.connect("acme", EMAIL)
    assert gateway.token("acme", EMAIL).status_code == 200
    assert acme.live_grants() == 2
    assert grant_events(gateway) == [("grant_replaced", "not_revoked")]
