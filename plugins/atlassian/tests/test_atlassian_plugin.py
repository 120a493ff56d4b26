"""Atlassian's departures from the textbook, through whole flows and through the plugin's
hooks, against the fake Atlassian: the authorize URL's audience and consent, a JSON token
endpoint, rotating refresh tokens (under a storm of callers, and reuse refused), who signed in
from /me with its email verification, and the accessible sites as the credential's account."""

from __future__ import annotations

import importlib.metadata
from urllib.parse import parse_qs, urlsplit

import authgateway_atlassian
import pytest
import requests

from authgateway import InvalidGrant, ProviderConfig, create_app
from authgateway.config import Settings
from authgateway.standard import authorization_url
from authgateway.testing import Account, redirect_uri
from authgateway.testing.fake import s256
from tests.conftest import served_storm

from .fake import SITE, FakeAtlassian

EMAIL = "ada@example.com"
ACCOUNT_ID = "557058:f5a2b3c4-0d1e-4f20-8a9b-7c6d5e4f3a21"
PLUGINS = [authgateway_atlassian]
SITES = {"sites": [{key: SITE[key] for key in ("id", "name", "url", "scopes")}]}


@pytest.fixture
def atlassian():
    with FakeAtlassian() as fake:
        fake.sign_in_as(Account(subject=ACCOUNT_ID, email=EMAIL))
        yield fake


@pytest.fixture
def gateway(authgateway_gateway, atlassian):
    return authgateway_gateway(PLUGINS, **atlassian.settings(redirect_uri("atlassian")))


def attempt(gateway):
    flow = gateway.start("atlassian", EMAIL)
    page = gateway.consent(flow["auth_url"])
    return page, gateway.status(flow)


def declared(atlassian, **extra):
    (info,) = authgateway_atlassian.authgateway_register_providers(
        settings=Settings(atlassian.settings("http://localhost/cb", **extra), {}))
    return info, ProviderConfig(client_id=atlassian.client_id,
                                client_secret=atlassian.client_secret,
                                redirect_uri="http://localhost/cb", timeout=5)


def exchanged(atlassian):
    """The plugin's exchange of a code the person consented to at the fake."""
    info, config = declared(atlassian)
    verifier = "v" * 43
    url = authorization_url(info, config, state="s", code_challenge=s256(verifier),
                            scopes=list(info.identity_scopes))
    location = requests.get(url, allow_redirects=False, timeout=5).headers["Location"]
    code = parse_qs(urlsplit(location).query)["code"][0]
    return info, config, authgateway_atlassian.authgateway_exchange_code(info, config, code,
                                                                         verifier)


# ---- the distribution and its settings ----------------------------------------------------

def test_the_distribution_registers_its_entry_point():
    points = [p for p in importlib.metadata.entry_points(group="authgateway")
              if p.name == "atlassian"]
    assert len(points) == 1 and points[0].dist.name == "authgateway-atlassian"
    assert points[0].load() is authgateway_atlassian


def test_the_defaults_are_atlassians_endpoints_and_providers_list_says_what_is_missing(
        tmp_path):
    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path}/a.sqlite", "LOAD_PLUGINS": True,
                      "ENCRYPTION_KEY": "x" * 43 + "="})
    info = app.extensions["authgateway"].providers.info("atlassian")
    assert info.authorize_url == "https://auth.atlassian.com/authorize"
    assert info.token_url == "https://auth.atlassian.com/oauth/token"
    assert info.userinfo_url == "https://api.atlassian.com/me"
    assert info.revoke_url is None
    assert info.sites_url == "https://api.atlassian.com/oauth/token/accessible-resources"
    listed = app.test_cli_runner().invoke(args=["providers", "list"]).output
    line = next(line for line in listed.splitlines() if line.startswith("atlassian"))
    assert "NOT CONFIGURED: set ATLASSIAN_CLIENT_ID, ATLASSIAN_CLIENT_SECRET, " \
        "ATLASSIAN_REDIRECT_URI" in line


def test_the_authorize_url_has_the_audience_consent_and_space_separated_scopes(
        authgateway_gateway, atlassian):
    gateway = authgateway_gateway(PLUGINS, **atlassian.settings(
        redirect_uri("atlassian"), ATLASSIAN_SCOPES="read:jira-work,read:confluence-content.all"))
    query = parse_qs(urlsplit(gateway.start("atlassian", EMAIL)["auth_url"]).query)
    assert query["audience"] == ["api.atlassian.com"] and query["prompt"] == ["consent"]
    assert set(query["scope"][0].split(" ")) == {
        "read:me", "offline_access", "read:jira-work", "read:confluence-content.all"}
    assert "login_hint" not in query


def test_the_token_endpoint_gets_a_json_body_with_the_client_in_it(gateway, atlassian):
    gateway.connect("atlassian", EMAIL)
    assert gateway.token("atlassian", EMAIL, force_refresh=True).status_code == 200
    exchange, refresh = atlassian.token_bodies
    assert exchange["grant_type"] == "authorization_code"
    assert exchange["client_id"] == atlassian.client_id
    assert exchange["client_secret"] == atlassian.client_secret
    assert exchange["redirect_uri"] == redirect_uri("atlassian")
    assert set(refresh) == {"grant_type", "refresh_token", "client_id", "client_secret"}


# ---- who signed in ---------------------------------------------------------------------------

def test_a_flow_signs_in_as_the_atlassian_account(gateway, atlassian):
    page, status = attempt(gateway)
    assert page.status_code == 200 and status["status"] == "completed"
    assert gateway.connections(EMAIL)["atlassian"]["status"] == "active"


@pytest.mark.parametrize("verified", [False, None], ids=["false", "absent"])
def test_an_email_atlassian_does_not_say_is_verified_is_refused(gateway, atlassian, verified):
    atlassian.sign_in_as(Account(subject=ACCOUNT_ID, email=EMAIL, email_verified=verified))
    page, status = attempt(gateway)
    assert page.status_code == 403 and status["error"] == "email_mismatch"
    assert "does not say this account&#39;s email address is verified" in \
        page.get_data(as_text=True)
    assert gateway.connections(EMAIL) == {}


def test_an_account_without_email_is_refused_with_a_page_that_says_why(gateway, atlassian):
    atlassian.sign_in_as(Account(subject=ACCOUNT_ID, email=None))
    page, status = attempt(gateway)
    assert page.status_code == 403 and status["error"] == "email_mismatch"
    assert "did not share this account" in page.get_data(as_text=True)


# ---- the accessible sites ----------------------------------------------------------------

def test_the_exchange_and_the_identity_carry_the_sites_as_the_account(atlassian):
    info, config, tokens = exchanged(atlassian)
    assert tokens.account == SITES
    identity = authgateway_atlassian.authgateway_fetch_identity(info, config, tokens)
    assert (identity.subject, identity.email, identity.email_verified) == (ACCOUNT_ID, EMAIL,
                                                                           True)
    assert identity.account == SITES


def test_a_refresh_reads_the_sites_again_and_keeps_the_stored_ones_when_that_fails(atlassian):
    info, config, tokens = exchanged(atlassian)
    atlassian.sites.append({"id": "c2", "name": "second", "url": "https://second.atlassian.net",
                            "scopes": ["read:jira-work"], "avatarUrl": "x"})
    refreshed = authgateway_atlassian.authgateway_refresh_token(info, config,
                                                                tokens.refresh_token)
    assert [site["id"] for site in refreshed.account["sites"]] == [SITE["id"], "c2"]
    atlassian.sites_status = 503
    again = authgateway_atlassian.authgateway_refresh_token(info, config,
                                                            refreshed.refresh_token)
    assert again.account is None  # the stored sites stay
    assert atlassian.token_is_live(again.refresh_token)


def test_sites_that_cannot_be_read_fail_the_flow_and_store_nothing(gateway, atlassian):
    atlassian.sites_status = 500
    page, status = attempt(gateway)
    assert page.status_code == 502 and status["error"] == "exchange_failed"
    assert gateway.connections(EMAIL) == {}


def test_a_refresh_whose_sites_fail_still_stores_the_rotated_refresh_token(gateway, atlassian):
    gateway.connect("atlassian", EMAIL)
    atlassian.sites_status = 503
    for _ in range(3):
        assert gateway.token("atlassian", EMAIL, force_refresh=True).status_code == 200
    assert atlassian.refresh_count == 3 and atlassian.reused_refresh == []


# ---- rotating refresh tokens -------------------------------------------------------------

def test_a_reused_refresh_token_is_refused_and_ends_the_grant(atlassian):
    info, config, tokens = exchanged(atlassian)
    rotated = authgateway_atlassian.authgateway_refresh_token(info, config, tokens.refresh_token)
    assert rotated.refresh_token != tokens.refresh_token
    with pytest.raises(InvalidGrant):
        authgateway_atlassian.authgateway_refresh_token(info, config, tokens.refresh_token)
    assert atlassian.reused_refresh == [tokens.refresh_token]
    assert not atlassian.token_is_live(rotated.refresh_token)
    assert not atlassian.token_is_live(rotated.access_token)


def test_invalid_grant_with_403_needs_the_user_again(gateway, atlassian):
    gateway.connect("atlassian", EMAIL)
    atlassian.end_grants()
    answer = gateway.token("atlassian", EMAIL, force_refresh=True)
    assert answer.status_code == 401 and answer.get_json()["detail"]["error"] == "refresh_failed"
    assert gateway.connections(EMAIL)["atlassian"]["status"] == "needs_reauth"


def test_a_refresh_storm_refreshes_once_and_stores_the_rotated_refresh_token(
        authgateway_gateway, atlassian):
    # As many refresh slots as server threads: every caller waits for the one refresh instead
    # of being handed the still-valid token it already had.
    gateway = authgateway_gateway(PLUGINS, REFRESH_CONCURRENCY=16,
                                  **atlassian.settings(redirect_uri("atlassian")))
    callers = 40
    atlassian.expires_in = 60  # inside the gateway's refresh buffer: due at once
    gateway.connect("atlassian", EMAIL)
    atlassian.expires_in = 3600
    atlassian.refresh_latency = 0.2
    answers = served_storm(gateway.app, callers, {"provider": "atlassian", "user_email": EMAIL},
                           gateway.headers)
    assert [answer.status_code for answer in answers] == [200] * callers
    assert len({answer.json()["access_token"] for answer in answers}) == 1
    assert atlassian.refresh_count == 1
    # The rotated refresh token is the one used next: a retired one would end the grant.
    atlassian.refresh_latency = 0
    for _ in range(2):
        assert gateway.token("atlassian", EMAIL, force_refresh=True).status_code == 200
    assert atlassian.refresh_count == 3 and atlassian.reused_refresh == []
