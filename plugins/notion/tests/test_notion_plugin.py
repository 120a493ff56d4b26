"""Notion's departures from the textbook, through whole flows and through the plugin's hooks,
against the fake Notion: Basic client authentication with a JSON body, no scopes, who signed in
read from the token answer, the workspace as the credential's account, an email Notion does not
share, rotating refresh tokens and revocation."""

from __future__ import annotations

import importlib.metadata
from urllib.parse import parse_qs, urlsplit

import authgateway_notion
import pytest
import requests

from authgateway import InvalidGrant, ProviderConfig, create_app
from authgateway.config import Settings
from authgateway.testing import Account, redirect_uri

from .fake import VERSION, WORKSPACE_ID, FakeNotion, basic

EMAIL = "ada@example.com"
USER_ID = "6f1d0c4e-2b8a-4e3f-9c71-0a5b3d2e1f40"
PLUGINS = [authgateway_notion]
ACCOUNT = {"workspace_id": WORKSPACE_ID, "workspace_name": "Ada's Workspace"}


@pytest.fixture
def notion():
    with FakeNotion() as fake:
        fake.sign_in_as(Account(subject=USER_ID, email=EMAIL))
        yield fake


@pytest.fixture
def gateway(authgateway_gateway, notion):
    return authgateway_gateway(PLUGINS, **notion.settings(redirect_uri("notion")))


def attempt(gateway):
    flow = gateway.start("notion", EMAIL)
    page = gateway.consent(flow["auth_url"])
    return page, gateway.status(flow)


def declared(notion, **extra):
    (info,) = authgateway_notion.authgateway_register_providers(
        settings=Settings(notion.settings("http://localhost/cb", **extra), {}))
    return info, ProviderConfig(client_id=notion.client_id, client_secret=notion.client_secret,
                                redirect_uri="http://localhost/cb", timeout=5)


def consented_code(info, config) -> str:
    """The person consents at the fake; the code it redirects back with."""
    url = authgateway_notion.authgateway_authorization_url(
        info, config, state="s", code_challenge="c" * 43, scopes=[], login_hint=None)
    answer = requests.get(url, allow_redirects=False, timeout=5)
    return parse_qs(urlsplit(answer.headers["Location"]).query)["code"][0]


# ---- the distribution and its settings ----------------------------------------------------

def test_the_distribution_registers_its_entry_point():
    points = [p for p in importlib.metadata.entry_points(group="authgateway")
              if p.name == "notion"]
    assert len(points) == 1 and points[0].dist.name == "authgateway-notion"
    assert points[0].load() is authgateway_notion


def test_the_defaults_are_notions_endpoints_and_providers_list_says_what_is_missing(tmp_path):
    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path}/n.sqlite", "LOAD_PLUGINS": True,
                      "ENCRYPTION_KEY": "x" * 43 + "="})
    info = app.extensions["authgateway"].providers.info("notion")
    assert info.authorize_url == "https://api.notion.com/v1/oauth/authorize"
    assert info.token_url == "https://api.notion.com/v1/oauth/token"
    assert info.revoke_url == "https://api.notion.com/v1/oauth/revoke"
    assert info.notion_version == VERSION
    listed = app.test_cli_runner().invoke(args=["providers", "list"]).output
    line = next(line for line in listed.splitlines() if line.startswith("notion"))
    assert "NOT CONFIGURED: set NOTION_CLIENT_ID, NOTION_CLIENT_SECRET, NOTION_REDIRECT_URI" \
        in line


def test_the_authorize_url_asks_for_a_user_owned_token_without_scopes(gateway, notion):
    query = parse_qs(urlsplit(gateway.start("notion", EMAIL)["auth_url"]).query)
    assert query["owner"] == ["user"] and query["response_type"] == ["code"]
    assert query["client_id"] == [notion.client_id]
    assert "scope" not in query and "login_hint" not in query


# ---- the token endpoint: Basic + JSON ------------------------------------------------------

def test_the_token_endpoint_is_called_with_basic_auth_a_json_body_and_the_version(gateway,
                                                                                  notion):
    gateway.connect("notion", EMAIL)
    assert gateway.token("notion", EMAIL, force_refresh=True).status_code == 200
    exchange, refresh = notion.token_bodies
    assert set(exchange) == {"grant_type", "code", "redirect_uri"}
    assert exchange["grant_type"] == "authorization_code"
    assert exchange["redirect_uri"] == redirect_uri("notion")
    assert set(refresh) == {"grant_type", "refresh_token"}
    assert notion.versions == [VERSION, VERSION]


def test_the_fake_refuses_a_form_body_and_a_request_without_basic_auth(notion):
    url = notion.url + notion.token_path
    headers = {"Notion-Version": VERSION}
    form = requests.post(url, timeout=5, data={"grant_type": "authorization_code", "code": "x"},
                         headers={**headers, "Authorization": basic(notion.client_id,
                                                                    notion.client_secret)})
    assert form.status_code == 400
    assert form.json()["object"] == "error" and form.json()["code"] == "invalid_json"
    in_body = requests.post(url, timeout=5, headers=headers, json={
        "grant_type": "authorization_code", "code": "x", "client_id": notion.client_id,
        "client_secret": notion.client_secret})
    assert in_body.status_code == 401 and in_body.json()["error"] == "invalid_client"
    assert notion.exchange_count == 0


def test_another_notion_version_can_be_set(authgateway_gateway, notion):
    gateway = authgateway_gateway(PLUGINS, **notion.settings(redirect_uri("notion"),
                                                             NOTION_VERSION="2026-03-11"))
    gateway.connect("notion", EMAIL)
    assert notion.versions == ["2026-03-11"]


# ---- who signed in, and the workspace ----------------------------------------------------

def test_the_exchange_and_the_identity_carry_the_workspace_as_the_account(notion):
    info, config = declared(notion)
    tokens = authgateway_notion.authgateway_exchange_code(info, config,
                                                          consented_code(info, config), "v")
    assert tokens.account == {**ACCOUNT, "bot_id": notion.bot_id}
    identity = authgateway_notion.authgateway_fetch_identity(info, config, tokens)
    assert (identity.subject, identity.email, identity.email_verified) == (USER_ID, EMAIL, True)
    assert identity.account == tokens.account
    notion.workspace["workspace_name"] = "Renamed"
    refreshed = authgateway_notion.authgateway_refresh_token(info, config, tokens.refresh_token)
    assert refreshed.account["workspace_name"] == "Renamed"
    assert refreshed.refresh_token != tokens.refresh_token  # rotated
    with pytest.raises(InvalidGrant):  # the old one is retired
        authgateway_notion.authgateway_refresh_token(info, config, tokens.refresh_token)


def test_a_flow_signs_in_as_the_notion_user(gateway, notion):
    page, status = attempt(gateway)
    assert page.status_code == 200 and status["status"] == "completed"
    assert gateway.connections(EMAIL)["notion"]["status"] == "active"


def test_an_email_notion_does_not_share_fails_with_a_page_that_says_why(gateway, notion):
    notion.share_email = False
    page, status = attempt(gateway)
    assert page.status_code == 403 and status["error"] == "email_mismatch"
    text = page.get_data(as_text=True)
    assert "read user information including email addresses" in text
    assert gateway.connections(EMAIL) == {}


def test_a_workspace_owned_token_names_no_user_and_is_refused(gateway, notion):
    original = notion._issue

    def workspace_owned(grant, client_id, refreshing=False):
        return {**original(grant, client_id, refreshing), "owner": {"workspace": True}}

    notion._issue = workspace_owned
    page, status = attempt(gateway)
    assert page.status_code == 502 and status["error"] == "identity_unverified"
    assert gateway.connections(EMAIL) == {}


def test_an_answer_without_a_workspace_fails_the_exchange(gateway, notion):
    notion.workspace = {}
    page, status = attempt(gateway)
    assert page.status_code == 502 and status["error"] == "exchange_failed"


# ---- refresh and its errors ----------------------------------------------------------------

@pytest.mark.parametrize("shape", ["oauth", "notion"])
def test_invalid_grant_in_either_error_shape_needs_the_user_again(gateway, notion, shape):
    gateway.connect("notion", EMAIL)
    if shape == "oauth":
        notion.fail_next(400, "invalid_grant")
    else:
        notion.end_grants()  # the fake answers a dead grant as a Notion API error
    answer = gateway.token("notion", EMAIL, force_refresh=True)
    assert answer.status_code == 401 and answer.get_json()["detail"]["error"] == "refresh_failed"
    assert gateway.connections(EMAIL)["notion"]["status"] == "needs_reauth"


def test_a_wrong_client_secret_is_the_operators_and_changes_nothing(authgateway_gateway, notion):
    gateway = authgateway_gateway(PLUGINS, **notion.settings(redirect_uri("notion")))
    gateway.connect("notion", EMAIL)
    before = gateway.token("notion", EMAIL).get_json()["access_token"]
    notion.client_secret = "rotated-at-notion"  # noqa: S105 (a fake's)
    answer = gateway.token("notion", EMAIL, force_refresh=True)
    assert answer.status_code == 502
    assert answer.get_json()["detail"]["error"] == "provider_misconfigured"
    assert gateway.connections(EMAIL)["notion"]["status"] == "active"
    assert notion.token_is_live(before)


# ---- revocation --------------------------------------------------------------------------

def test_revocation_posts_the_access_token_with_basic_auth(gateway, notion):
    gateway.connect("notion", EMAIL)
    access = gateway.token("notion", EMAIL).get_json()["access_token"]
    answer = gateway.revoke("notion", EMAIL)
    assert answer.status_code == 200 and answer.get_json()["provider_revoked"] is True
    assert notion.revoked == [access] and not notion.token_is_live(access)


def test_a_refresh_token_without_expires_in_is_kept_for_a_forced_refresh(authgateway_gateway):
    with FakeNotion(expires_in=None) as notion:
        notion.sign_in_as(Account(subject=USER_ID, email=EMAIL))
        gateway = authgateway_gateway(PLUGINS, **notion.settings(redirect_uri("notion")))
        gateway.connect("notion", EMAIL)
        first = gateway.token("notion", EMAIL, min_valid_seconds=86400).get_json()
        assert first["expires_at"] is None and notion.refresh_count == 0
        forced = gateway.token("notion", EMAIL, force_refresh=True)
        assert forced.status_code == 200, forced.get_json()
        assert forced.get_json()["access_token"] != first["access_token"]
        assert notion.refresh_count == 1 and notion.reused_refresh == []
