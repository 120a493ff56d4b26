"""GitHub through the real flow against a fake GitHub: both kinds of client (an OAuth App's
tokens that never expire, a GitHub App's that rotate), every verified email of the account,
GitHub's errors sent with HTTP 200, and revocation of the grant."""

from __future__ import annotations

import importlib.metadata
from datetime import timedelta
from urllib.parse import parse_qs, urlencode, urlsplit

import authgateway_github
import pytest
import requests
from sqlalchemy import select, update

from authgateway import InvalidGrant, create_app
from authgateway.extensions import db
from authgateway.models import Credential, utcnow
from authgateway.standard import parse_token_answer, read_answer
from tests.conftest import HEADERS, served_storm
from tests.fakes.github import ACCESS_TTL, Account, Email
from tests.flow import consent, start

EMAIL = "ada@example.com"


def begin(client, email=EMAIL):
    return start(client, email, provider="github")


def connect(client, email=EMAIL):
    flow = begin(client, email)
    page = client.get(consent(flow["auth_url"]))
    assert page.status_code == 200, page.get_data(as_text=True)
    return flow


def token(client, email=EMAIL, **extra):
    return client.post("/auth/token", json={"provider": "github", "user_email": email, **extra},
                       headers=HEADERS)


def status(client, flow):
    return client.get(f"/auth/status/{flow['session_id']}", headers=HEADERS).get_json()


def stored(app) -> Credential:
    with app.app_context():
        return db.session.scalar(select(Credential))


# ---- the distribution and its settings ----------------------------------------------------

def test_the_distribution_registers_its_entry_point():
    points = [p for p in importlib.metadata.entry_points(group="authgateway")
              if p.name == "github"]
    assert len(points) == 1 and points[0].dist.name == "authgateway-github"
    assert points[0].load() is authgateway_github


def test_the_defaults_are_githubs_endpoints(tmp_path):
    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path}/g.sqlite", "LOAD_PLUGINS": True,
                      "ENCRYPTION_KEY": "x" * 43 + "="})
    info = app.extensions["authgateway"].providers.info("github")
    assert info.authorize_url == "https://github.com/login/oauth/authorize"
    assert info.token_url == "https://github.com/login/oauth/access_token"
    assert info.userinfo_url == "https://api.github.com/user"
    listed = app.test_cli_runner().invoke(args=["providers", "list"]).output
    assert "NOT CONFIGURED: set GITHUB_CLIENT_ID, GITHUB_CLIENT_SECRET, GITHUB_REDIRECT_URI" \
        in listed


def test_the_authorize_url_asks_for_identity_scopes_with_pkce_and_no_login_hint(client, github):
    query = parse_qs(urlsplit(begin(client)["auth_url"]).query)
    assert query["scope"] == ["read:user user:email"]
    assert query["code_challenge_method"] == ["S256"] and query["code_challenge"][0]
    assert "login_hint" not in query and "login" not in query
    assert query["client_id"] == [github.client_id]


# ---- identity ----------------------------------------------------------------------------

def test_a_verified_secondary_email_connects(app, client, github):
    github.account = Account(subject="1", email="ada@work.example",
                             emails=(Email("Ada@Example.com"),))
    connect(client)
    answer = token(client)
    assert answer.status_code == 200 and answer.get_json()["access_token"].startswith("gho_")
    assert stored(app).subject == "1"
    # The token endpoint was asked for JSON: GitHub answers form-encoded otherwise.
    assert all("application/json" in accept for accept in github.token_accepts)


def test_an_unverified_email_cannot_connect(app, client, github):
    github.account = Account(subject="1", email="ada@work.example",
                             emails=(Email(EMAIL, verified=False),))
    flow = begin(client)
    page = client.get(consent(flow["auth_url"]))
    assert page.status_code == 403
    assert status(client, flow)["error"] == "email_mismatch"
    assert stored(app) is None


def test_another_github_account_for_the_same_user_is_an_account_mismatch(app, client, github):
    connect(client)
    github.account = Account(subject="999", email=EMAIL)
    flow = begin(client)
    page = client.get(consent(flow["auth_url"]))
    assert page.status_code == 400
    assert status(client, flow)["error"] == "account_mismatch"
    assert stored(app).subject == "583231"


# ---- an OAuth App: tokens that never expire ----------------------------------------------

def test_an_oauth_app_token_never_expires_and_is_never_refreshed(client, github):
    connect(client)
    for _ in range(3):
        answer = token(client, min_valid_seconds=3000)
        assert answer.status_code == 200 and answer.get_json()["expires_at"] is None
    listed = client.get(f"/auth/providers/{EMAIL}", headers=HEADERS).get_json()
    assert [p["token_expires_at"] for p in listed["providers"]] == [None]
    assert github.refresh_count == 0


# ---- a GitHub App: expiring tokens, rotation ---------------------------------------------

@pytest.fixture
def github_app(github):
    github.expiring = True
    github.numbers_as_strings = True  # "28800", as GitHub sometimes sends them
    return github


def expire(app) -> None:
    with app.app_context():
        db.session.execute(update(Credential).values(expires_at=utcnow() - timedelta(seconds=1)))
        db.session.commit()


def test_a_github_app_token_expires_in_eight_hours(app, client, github_app):
    connect(client)
    expires_at = stored(app).expires_at
    assert abs((expires_at - utcnow()).total_seconds() - ACCESS_TTL) < 60


def test_a_refresh_storm_refreshes_once_and_never_reuses_a_refresh_token(make_app, github_app):
    app = make_app()
    connect(app.test_client())
    expire(app)
    github_app.refresh_latency = 0.2
    answers = served_storm(app, 50, {"provider": "github", "user_email": EMAIL}, HEADERS)
    assert [a.status_code for a in answers] == [200] * 50
    assert len({a.json()["access_token"] for a in answers}) == 1
    assert github_app.refresh_count == 1
    # The rotated refresh token is the one used next; the retired one is never sent again.
    github_app.refresh_latency = 0
    client = app.test_client()
    for _ in range(2):
        assert token(client, force_refresh=True).status_code == 200
    assert github_app.refresh_count == 3 and github_app.reused_refresh == []


# ---- errors ------------------------------------------------------------------------------

def test_bad_verification_code_fails_the_flow(app, client, github):
    flow = begin(client)
    callback = urlsplit(consent(flow["auth_url"]))
    query = {k: v[0] for k, v in parse_qs(callback.query).items()} | {"code": "not-a-code"}
    page = client.get(callback.path + "?" + urlencode(query))
    assert page.status_code == 502
    assert status(client, flow)["status"] == "failed"
    assert stored(app) is None


def test_bad_refresh_token_sent_with_200_marks_the_credential_needs_reauth(app, client,
                                                                          github_app):
    connect(client)
    github_app.fail_next(200, "bad_refresh_token")
    answer = token(client, force_refresh=True)
    assert answer.status_code == 401
    assert answer.get_json()["detail"]["error"] == "refresh_failed"
    assert stored(app).status == "needs_reauth"


@pytest.mark.parametrize(("status_code", "error", "wire"), [
    (200, "incorrect_client_credentials", "provider_misconfigured"),
    (502, None, "provider_unavailable"),
    (503, None, "provider_unavailable"),
])
def test_operator_and_transient_failures_change_nothing(app, client, github_app, status_code,
                                                        error, wire):
    connect(client)
    before = stored(app)
    github_app.fail_next(status_code, error)
    answer = token(client, force_refresh=True)
    assert answer.status_code == 502 and answer.get_json()["detail"]["error"] == wire
    after = stored(app)
    assert (after.status, after.access_token_encrypted, after.refresh_token_encrypted) == (
        before.status, before.access_token_encrypted, before.refresh_token_encrypted)
    assert token(client, force_refresh=True).status_code == 200


def test_a_timeout_is_provider_unavailable(make_app, github_app):
    app = make_app(PROVIDER_TIMEOUT=0.3)
    client = app.test_client()
    connect(client)
    github_app.refresh_latency = 1.0
    answer = token(client, force_refresh=True)
    assert answer.get_json()["detail"]["error"] == "provider_unavailable"
    assert stored(app).status == "active"


def test_the_token_endpoint_answers_form_encoded_without_accept_json(github):
    response = requests.post(github.settings("x")["GITHUB_TOKEN_URL"], timeout=5, data={
        "client_id": github.client_id, "client_secret": github.client_secret, "code": "nope"})
    assert response.headers["Content-Type"] == "application/x-www-form-urlencoded"
    info = authgateway_github.authgateway_register_providers(
        settings={})[0]
    with pytest.raises(InvalidGrant):
        parse_token_answer(info, response.status_code, read_answer(response))


# ---- revocation --------------------------------------------------------------------------

def test_revocation_deletes_the_grant_with_the_access_token(app, client, github_app):
    connect(client)
    access = token(client).get_json()["access_token"]
    answer = client.delete("/auth/revoke", json={"provider": "github", "user_email": EMAIL},
                           headers=HEADERS)
    assert answer.status_code == 200 and answer.get_json()["provider_revoked"] is True
    assert github_app.revoked == [access] and not github_app.token_is_live(access)
    assert stored(app) is None
