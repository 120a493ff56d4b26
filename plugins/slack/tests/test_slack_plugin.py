"""Slack's departures from the textbook, through whole flows against the fake Slack on both
backends: the person's scopes in user_scope, the bot token beside the user's in one answer,
failures sent as ``ok: false`` with HTTP 200, token rotation on and off, the team in the
subject and in the account, and a refresh storm that reaches Slack once."""

from __future__ import annotations

import importlib.metadata
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import authgateway_slack
import pytest
from sqlalchemy import select, update

from authgateway import create_app
from authgateway.context import gateway
from authgateway.extensions import db
from authgateway.models import Credential, utcnow
from authgateway.testing import Account
from tests.conftest import HEADERS, served_storm
from tests.flow import consent, start

from .fake import TEAM_ID, TEAM_NAME

EMAIL = "ada@example.com"
USER_ID = "U0ADA0001"
ROTATION_ON = pytest.mark.parametrize("slack", [True], ids=["rotation-on"], indirect=True)


@pytest.fixture(autouse=True)
def ada(slack):
    slack.sign_in_as(Account(subject=USER_ID, email=EMAIL))


def begin(client, email=EMAIL, **extra):
    return start(client, email, provider="slack", **extra)


def attempt(client, email=EMAIL):
    """One flow: the callback page and the session's status."""
    flow = begin(client, email)
    page = client.get(consent(flow["auth_url"]))
    status = client.get(f"/auth/status/{flow['session_id']}", headers=HEADERS).get_json()
    return page, status


def connect(client, email=EMAIL):
    page, status = attempt(client, email)
    assert page.status_code == 200, page.get_data(as_text=True)
    return status


def token(client, email=EMAIL, **extra):
    return client.post("/auth/token", json={"provider": "slack", "user_email": email, **extra},
                       headers=HEADERS)


def listed(client, email=EMAIL) -> dict:
    answer = client.get(f"/auth/providers/{email}", headers=HEADERS).get_json()
    return {entry["provider"]: entry for entry in answer["providers"]}


def stored(app) -> Credential:
    with app.app_context():
        return db.session.scalar(select(Credential))


def stored_refresh_token(app) -> str | None:
    credential = stored(app)
    if credential.refresh_token_encrypted is None:
        return None
    with app.app_context():
        return gateway().keyring.decrypt(credential.refresh_token_encrypted, credential.key_id)


def expire(app) -> None:
    with app.app_context():
        db.session.execute(update(Credential).values(expires_at=utcnow() - timedelta(seconds=1)))
        db.session.commit()


# ---- the distribution and its settings ----------------------------------------------------

def test_the_distribution_registers_its_entry_point():
    points = [p for p in importlib.metadata.entry_points(group="authgateway")
              if p.name == "slack"]
    assert len(points) == 1 and points[0].dist.name == "authgateway-slack"
    assert points[0].load() is authgateway_slack


def test_the_defaults_are_slacks_and_providers_list_says_what_is_missing(tmp_path):
    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path}/s.sqlite", "LOAD_PLUGINS": True,
                      "ENCRYPTION_KEY": "x" * 43 + "="})
    info = app.extensions["authgateway"].providers.info("slack")
    assert info.authorize_url == "https://slack.com/oauth/v2/authorize"
    assert info.token_url == "https://slack.com/api/oauth.v2.access"
    assert info.revoke_url == "https://slack.com/api/auth.revoke"
    assert info.userinfo_url == "https://slack.com/api/users.info"
    listed_providers = app.test_cli_runner().invoke(args=["providers", "list"]).output
    line = next(line for line in listed_providers.splitlines() if line.startswith("slack"))
    assert "plugin=slack" in line
    assert "NOT CONFIGURED: set SLACK_CLIENT_ID, SLACK_CLIENT_SECRET, SLACK_REDIRECT_URI" in line


def test_the_persons_scopes_go_in_user_scope_comma_separated(client, slack):
    flow = begin(client, scopes=["channels:history", "chat:write"])
    query = parse_qs(urlsplit(flow["auth_url"]).query)
    assert "scope" not in query  # that would be the bot's
    assert query["user_scope"] == ["users:read,users:read.email,channels:history,chat:write"]
    assert query["code_challenge_method"] == ["S256"] and "login_hint" not in query
    assert urlsplit(flow["auth_url"]).path == "/oauth/v2/authorize"


# ---- the user's token, never the bot's -------------------------------------------------------

def test_the_token_served_is_the_persons_never_the_bots(app, client, slack):
    connect(client)
    answer = token(client)
    assert answer.status_code == 200, answer.get_json()
    served = answer.get_json()["access_token"]
    assert slack.bot_tokens, "the fake sent no bot token: the check would prove nothing"
    assert served not in slack.bot_tokens and served.startswith(("xoxp-", "xoxe.xoxp-"))
    assert slack.account_for(served).subject == USER_ID
    assert answer.get_json()["scopes"] == ["users:read", "users:read.email"]
    assert stored(app).subject == f"{TEAM_ID}/{USER_ID}"


def test_an_answer_without_a_user_token_connects_nothing(client, slack):
    """An app that asked for bot scopes only: the bot token is not taken in its place."""
    slack.no_user_token = True
    page, status = attempt(client)
    assert page.status_code == 502 and status["error"] == "exchange_failed"
    assert listed(client) == {}
    assert not any(bot in page.get_data(as_text=True) for bot in slack.bot_tokens)


# ---- ok: false with HTTP 200 ---------------------------------------------------------------

@pytest.mark.parametrize("error", ["invalid_code", "bad_client_secret", "ratelimited"])
def test_ok_false_on_the_code_exchange_fails_the_flow(client, slack, error):
    slack.fail_next(200, error)
    page, status = attempt(client)
    assert page.status_code == 502, page.get_data(as_text=True)
    assert status["status"] == "failed" and status["error"] == "exchange_failed"
    assert listed(client) == {}


@ROTATION_ON
@pytest.mark.parametrize(("error", "status", "code", "state"), [
    ("invalid_refresh_token", 401, "refresh_failed", "needs_reauth"),
    ("token_revoked", 401, "refresh_failed", "needs_reauth"),
    ("bad_client_secret", 502, "provider_misconfigured", "active"),
    ("invalid_client_id", 502, "provider_misconfigured", "active"),
    ("ratelimited", 502, "provider_unavailable", "active"),
    ("internal_error", 502, "provider_unavailable", "active"),
    ("some_error_slack_adds_later", 502, "provider_misconfigured", "active"),
])
def test_ok_false_on_a_refresh_means_what_its_error_says(client, slack, error, status, code,
                                                          state):
    connect(client)
    slack.fail_next(200, error)
    answer = token(client, force_refresh=True)
    assert answer.status_code == status, answer.get_json()
    assert answer.get_json()["detail"]["error"] == code
    assert listed(client)["slack"]["status"] == state
    if state == "active":
        assert token(client, force_refresh=True).status_code == 200


# ---- token rotation on and off ---------------------------------------------------------------

@pytest.mark.parametrize("slack", [False], ids=["rotation-off"], indirect=True)
def test_without_rotation_the_token_never_expires_and_has_no_refresh_token(app, client, slack):
    connect(client)
    answer = token(client, min_valid_seconds=86400)
    assert answer.status_code == 200 and answer.get_json()["expires_at"] is None
    assert stored(app).refresh_token_encrypted is None and stored(app).expires_at is None
    assert slack.refresh_count == 0


@ROTATION_ON
def test_with_rotation_the_token_expires_in_twelve_hours_and_its_refresh_token_rotates(
        app, client, slack):
    connect(client)
    assert abs((stored(app).expires_at - utcnow()).total_seconds() - 43200) < 60
    first = stored_refresh_token(app)
    assert first.startswith("xoxe-1-")
    answer = token(client, force_refresh=True)
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["access_token"].startswith("xoxe.xoxp-")
    second = stored_refresh_token(app)
    assert second.startswith("xoxe-1-") and second != first
    assert not slack.token_is_live(first) and slack.token_is_live(second)


@ROTATION_ON
@pytest.mark.parametrize("shape", ["top_level", "authed_user"])
def test_a_refreshed_user_token_is_read_at_the_top_level_or_under_authed_user(client, slack,
                                                                              shape):
    connect(client)
    slack.refresh_shape = shape
    answer = token(client, force_refresh=True)
    assert answer.status_code == 200, answer.get_json()
    assert slack.account_for(answer.get_json()["access_token"]).subject == USER_ID
    assert answer.get_json()["account"] == {"team_id": TEAM_ID, "team_name": TEAM_NAME}


@ROTATION_ON
def test_a_refresh_that_answers_a_bot_token_is_refused_and_changes_nothing(client, slack):
    connect(client)
    before = token(client).get_json()["access_token"]
    slack.refresh_shape = "bot"
    answer = token(client, force_refresh=True)
    assert answer.status_code == 502, answer.get_json()
    assert answer.get_json()["detail"]["error"] == "provider_misconfigured"
    assert token(client).get_json()["access_token"] == before
    assert listed(client)["slack"]["status"] == "active"


@ROTATION_ON
def test_a_refresh_storm_reaches_slack_once_and_never_reuses_a_refresh_token(make_app, slack):
    app = make_app()
    connect(app.test_client())
    expire(app)
    slack.refresh_latency = 0.2
    answers = served_storm(app, 30, {"provider": "slack", "user_email": EMAIL}, HEADERS)
    assert [a.status_code for a in answers] == [200] * 30
    assert len({a.json()["access_token"] for a in answers}) == 1
    assert slack.refresh_count == 1
    slack.refresh_latency = 0
    client = app.test_client()
    for _ in range(2):
        assert token(client, force_refresh=True).status_code == 200
    assert slack.refresh_count == 3 and slack.reused_refresh == []


# ---- who signed in, and the team ----------------------------------------------------------

def test_the_team_comes_back_as_the_account(client):
    connect(client)
    team = {"team_id": TEAM_ID, "team_name": TEAM_NAME}
    assert token(client).get_json()["account"] == team
    assert listed(client)["slack"]["account"] == team


@ROTATION_ON
def test_a_refresh_brings_the_teams_new_name(client, slack):
    connect(client)
    slack.account.claims["team_name"] = "Renamed Inc"  # the grant's account, as Slack sees it
    answer = token(client, force_refresh=True)
    assert answer.get_json()["account"] == {"team_id": TEAM_ID, "team_name": "Renamed Inc"}
    assert listed(client)["slack"]["account"]["team_name"] == "Renamed Inc"


def test_the_same_user_id_in_another_team_is_another_account(client, slack):
    connect(client)
    first = token(client).get_json()["access_token"]
    slack.sign_in_as(Account(subject=USER_ID, email=EMAIL, claims={"team_id": "T0OTHER01"}))
    page, status = attempt(client)
    assert page.status_code == 400 and status["error"] == "account_mismatch"
    assert token(client).get_json()["access_token"] == first


@pytest.mark.parametrize(("account", "says"), [
    (Account(subject=USER_ID, email=EMAIL, email_verified=False), "has not confirmed"),
    (Account(subject=USER_ID, email=""), "users:read.email"),
])
def test_an_email_slack_does_not_vouch_for_connects_nothing(client, slack, account, says):
    slack.sign_in_as(account)
    page, status = attempt(client)
    assert page.status_code == 403 and status["error"] == "email_mismatch"
    assert says in page.get_data(as_text=True)
    assert listed(client) == {}


def test_revocation_calls_auth_revoke_with_the_users_token(client, slack):
    connect(client)
    served = token(client).get_json()["access_token"]
    answer = client.delete("/auth/revoke", json={"provider": "slack", "user_email": EMAIL},
                           headers=HEADERS)
    assert answer.status_code == 200 and answer.get_json()["provider_revoked"] is True
    assert slack.revoked == [served] and not slack.token_is_live(served)
    assert ("POST", "/api/auth.revoke") in slack.requests
