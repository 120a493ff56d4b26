"""Scoped API keys: each key may be limited to providers, users and operations, may expire, and
can be rotated with a grace period. A request outside a key's scope answers 403 forbidden before
anything about the user is read, and the refusal is audited and counted."""

from __future__ import annotations

import re
import time
from datetime import timedelta

import authgateway_github
import authgateway_google
import pytest
from authgateway_client import Forbidden, GatewayClient
from sqlalchemy import select, update

from authgateway import audit
from authgateway.extensions import db
from authgateway.models import ApiKey, AuditEvent, AuthSession, Credential, RateLimit, utcnow
from tests.conftest import HEADERS
from tests.flow import connect, start
from tests.wire import WRITE, Wire

ADA, BOB = "ada@example.com", "bob@other.org"


@pytest.fixture
def gateway(make_app):
    """An app with google and github installed (github unconfigured), ada and bob connected to
    google with the bootstrap key, and its API key cache held for the whole test."""
    app = make_app(APIKEY_CACHE_SECONDS=300, PLUGINS=[authgateway_google, authgateway_github])
    client = app.test_client()
    connect(client, ADA)
    connect(client, BOB)
    return app, client


def create(app, name: str, *options: str) -> dict:
    result = app.test_cli_runner().invoke(args=["apikeys", "create", name, *options])
    assert result.exit_code == 0, result.output
    return {"X-API-Key": result.stdout.strip()}


def token(client, headers, email=ADA, provider="google"):
    return client.post("/auth/token", json={"provider": provider, "user_email": email},
                       headers=headers)


def error(answer) -> dict:
    return answer.get_json()["detail"]


def snapshot(app) -> dict:
    """Everything stored but the audit trail."""
    with app.app_context():
        tables = {model.__tablename__: [tuple(row) for row in db.session.execute(
                      select(*model.__table__.columns).order_by(*model.__table__.primary_key))]
                  for model in (ApiKey, Credential, AuthSession, RateLimit)}
        db.session.rollback()
    return tables


def forbidden_events(app) -> list[AuditEvent]:
    with app.app_context():
        rows = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "forbidden")
                                  .order_by(AuditEvent.id)).all()
        db.session.expunge_all()
    return rows


def expire_tokens(app) -> None:
    """Every stored access token expired: an allowed /auth/token would refresh upstream."""
    with app.app_context():
        db.session.execute(update(Credential).values(expires_at=utcnow() - timedelta(minutes=1)))
        db.session.commit()


#: For each dimension: the key's options, a request inside its scope, one outside, and the word
#: the refusal's message names.
DIMENSIONS = {
    "provider": (["--providers", "google"], ("token", ADA, "google"), ("token", ADA, "github"),
                 "provider 'github'"),
    "user": (["--users", "*@EXAMPLE.com"], ("token", ADA, "google"), ("token", BOB, "google"),
             "this user"),
    "operation": (["--can", "init,status"], ("init", ADA, "google"), ("token", ADA, "google"),
                  "'token' operation"),
    "user-init": (["--users", "ada@example.com"], ("init", ADA, "google"),
                  ("init", BOB, "google"), "this user"),
}


def call(client, headers, request):
    operation, email, provider = request
    if operation == "token":
        return token(client, headers, email, provider)
    return client.post("/auth/init", json={"provider": provider, "user_email": email},
                       headers=headers)


@pytest.mark.parametrize("dimension", DIMENSIONS)
def test_a_request_outside_the_scope_is_forbidden_before_anything_is_read(gateway, google,
                                                                         dimension):
    app, client = gateway
    options, inside, outside, named = DIMENSIONS[dimension]
    headers = create(app, "mcp-scoped", *options)
    assert call(client, headers, inside).status_code == 200  # (and the key is cached)
    expire_tokens(app)
    before, upstream = snapshot(app), list(google.requests)
    with app.app_context():
        wire = Wire(db.engine)
    try:
        answer = call(client, headers, outside)
        said = wire.take()[1]
    finally:
        wire.close()
    assert answer.status_code == 403, answer.get_json()
    assert error(answer)["error"] == "forbidden" and error(answer)["auth_required"] is False
    assert named in error(answer)["message"]
    assert google.requests == upstream  # nothing asked of the provider
    assert snapshot(app) == before  # nothing written but the audit row ...
    assert "credentials" not in said and "auth_sessions" not in said, said  # ... nor read
    assert {w.lower() for w in WRITE.findall(said)} == {"insert"} and "audit_events" in said
    [event] = forbidden_events(app)
    assert (event.actor, event.outcome, event.detail) == (
        "mcp-scoped", "forbidden", f"lacks={dimension.split('-')[0]}")


def test_the_refusal_says_nothing_about_whether_the_user_has_a_credential(gateway):
    app, client = gateway
    headers = create(app, "mcp-example", "--users", "*@example.com")
    connected, never = token(client, headers, BOB), token(client, headers, "carol@other.org")
    assert connected.status_code == never.status_code == 403
    assert error(connected)["message"] == error(never)["message"]
    revoked = client.delete("/auth/revoke", json={"provider": "google", "user_email": BOB},
                            headers=headers)
    assert revoked.status_code == 403 and error(revoked)["error"] == "forbidden"
    assert client.get(f"/auth/providers/{BOB}", headers=headers).status_code == 403
    assert token(client, HEADERS, BOB).status_code == 200  # still there


def test_providers_lists_only_the_providers_in_scope(gateway):
    app, client = gateway
    google_only = create(app, "mcp-google", "--providers", "google")
    github_only = create(app, "mcp-github", "--providers", "github")
    listed = client.get(f"/auth/providers/{ADA}", headers=google_only).get_json()
    assert [entry["provider"] for entry in listed["providers"]] == ["google"]
    listed = client.get(f"/auth/providers/{ADA}", headers=github_only).get_json()
    assert listed == {"user_email": ADA, "providers": []}


def test_a_flow_is_visible_to_its_key_and_to_keys_whose_scope_covers_it(gateway):
    app, client = gateway
    front = create(app, "front-end", "--can", "init,status", "--users", "*@example.com")
    other = create(app, "other-team", "--users", "*@other.org")
    own = client.post("/auth/init", json={"provider": "google", "user_email": ADA},
                      headers=front).get_json()["session_id"]
    bobs = start(client, BOB)["session_id"]  # started with the bootstrap key
    adas = start(client, ADA)["session_id"]

    assert client.get(f"/auth/status/{adas}", headers=front).status_code == 200  # covered
    hidden = client.get(f"/auth/status/{bobs}", headers=front)
    assert hidden.status_code == 404 and error(hidden)["error"] == "session_not_found"
    assert client.get(f"/auth/status/{own}", headers=other).status_code == 404
    assert [(e.actor, e.detail) for e in forbidden_events(app)] == [
        ("front-end", "lacks=flow"), ("other-team", "lacks=flow")]

    # Its own flow stays visible to the key that started it, whatever its scope becomes.
    narrowed = app.test_cli_runner().invoke(args=["apikeys", "update", "front-end", "--users",
                                                  "*@nowhere.example"])
    assert narrowed.exit_code == 0, narrowed.output
    app.extensions["authgateway"].api_keys._ttl = 0  # read the new scope now
    assert client.get(f"/auth/status/{own}", headers=front).status_code == 200
    assert client.get(f"/auth/status/{adas}", headers=front).status_code == 404

    no_status = create(app, "token-only", "--can", "token")
    refused = client.get(f"/auth/status/{own}", headers=no_status)
    assert refused.status_code == 403 and "'status' operation" in error(refused)["message"]


def test_refusals_are_audited_at_most_once_an_interval_and_all_counted(gateway, monkeypatch):
    app, client = gateway
    headers = create(app, "mcp-noisy", "--can", "init")
    assert [token(client, headers).status_code for _ in range(3)] == [403] * 3
    assert len(forbidden_events(app)) == 1
    monkeypatch.setattr(audit, "REFUSAL_INTERVAL", 0.0)
    assert token(client, headers).status_code == 403
    assert [e.detail for e in forbidden_events(app)] == [
        "lacks=operation", "lacks=operation refused_since_last_row=2"]
    metrics = client.get("/metrics", headers=HEADERS).get_data(as_text=True)
    line = 'authgateway_api_key_refusals_total{api_key="mcp-noisy",lacks="operation"} '
    assert float(metrics.split(line, 1)[1].split()[0]) >= 4  # (the registry is per process)


def test_an_expired_key_is_an_invalid_key(make_app):
    app = make_app(APIKEY_CACHE_SECONDS=300)
    client = app.test_client()
    connect(client, ADA)
    created = time.monotonic()
    headers = create(app, "mcp-short", "--expires-in", "2s")
    assert token(client, headers).status_code == 200
    time.sleep(max(0.0, created + 2.2 - time.monotonic()))
    answer = token(client, headers)
    assert answer.status_code == 403 and error(answer)["error"] == "invalid_api_key"
    [row] = re.findall(r"^mcp-short .*$", app.test_cli_runner().invoke(
        args=["apikeys", "list"]).output, re.MULTILINE)
    assert "expired" in row


def test_rotation_keeps_the_old_secret_for_the_grace_then_only_the_new(make_app):
    app = make_app(APIKEY_CACHE_SECONDS=1)
    client, runner = app.test_client(), app.test_cli_runner()
    connect(client, ADA)
    old = create(app, "mcp-rotating", "--users", "*@example.com")
    assert token(client, old).status_code == 200
    rotated = runner.invoke(args=["apikeys", "rotate", "mcp-rotating", "--grace", "2s"])
    assert rotated.exit_code == 0, rotated.output
    rotated_at = time.monotonic()
    new = {"X-API-Key": rotated.stdout.strip()}
    assert new != old and "works until" in rotated.stderr
    assert token(client, old).status_code == token(client, new).status_code == 200
    assert token(client, new, BOB).status_code == 403  # the same scope
    assert "rotating" in runner.invoke(args=["apikeys", "show", "mcp-rotating"]).output
    time.sleep(max(0.0, rotated_at + 2.2 - time.monotonic()))
    assert token(client, old).status_code == 403
    assert token(client, new).status_code == 200

    again = runner.invoke(args=["apikeys", "rotate", "mcp-rotating", "--grace", "0"])
    newest = {"X-API-Key": again.stdout.strip()}
    time.sleep(1.1)  # the cache's bound
    assert token(client, new).status_code == 403 and token(client, newest).status_code == 200
    assert runner.invoke(args=["apikeys", "revoke", "mcp-rotating"]).exit_code == 0
    assert runner.invoke(args=["apikeys", "rotate", "mcp-rotating"]).exit_code == 1


def test_a_scope_change_reaches_every_process_within_the_cache_ttl(make_app):
    ttl = 1.0
    first, second = make_app(APIKEY_CACHE_SECONDS=ttl), make_app(APIKEY_CACHE_SECONDS=ttl)
    connect(first.test_client(), ADA)
    headers = create(first, "mcp-changing")
    clients = [first.test_client(), second.test_client()]
    assert [token(c, headers).status_code for c in clients] == [200, 200]

    changed = first.test_cli_runner().invoke(args=["apikeys", "update", "mcp-changing", "--can",
                                                   "init,status"])
    assert changed.exit_code == 0 and "can=init,status" in changed.output
    changed_at = time.monotonic()
    refused_after = []
    for client in clients:
        while token(client, headers).status_code == 200 and time.monotonic() - changed_at < 5:
            time.sleep(0.02)
        refused_after.append(time.monotonic() - changed_at)
    assert max(refused_after) <= ttl + 1.0, refused_after  # the ttl, plus a slow request or two
    assert [error(token(c, headers))["error"] for c in clients] == ["forbidden", "forbidden"]

    lifted = first.test_cli_runner().invoke(args=["apikeys", "update", "mcp-changing",
                                                  "--all-operations"])
    assert lifted.exit_code == 0 and "full access" in lifted.output


@pytest.mark.parametrize("options,option", [
    (["--providers", "google,dropbox"], "--providers"),
    (["--providers", ","], "--providers"),
    (["--users", ""], "--users"),
    (["--users", "ada"], "--users"),
    (["--users", "a b@example.com"], "--users"),
    (["--users", "[ad@example.com"], "--users"),
    (["--users", "\u212aate@example.com"], "--users"),
    (["--can", "token,fly"], "--can"),
    (["--expires-in", "90x"], "--expires-in"),
    (["--expires-in", "0d"], "--expires-in"),
])
def test_bad_options_store_nothing_and_name_the_option(app, options, option):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["apikeys", "create", "mcp-bad", *options])
    assert result.exit_code != 0
    [sentence] = result.output.strip().splitlines()
    assert sentence.startswith(f"Error: {option} ")
    assert runner.invoke(args=["apikeys", "create", "mcp-good"]).exit_code == 0
    updated = runner.invoke(args=["apikeys", "update", "mcp-good", *options])
    assert updated.exit_code != 0 and option in updated.output
    with app.app_context():
        rows = db.session.execute(select(ApiKey.name, ApiKey.providers, ApiKey.users,
                                         ApiKey.operations, ApiKey.expires_at)).all()
    assert [tuple(row) for row in rows] == [("mcp-good", None, None, None, None)]


def test_list_and_show_mark_the_bootstrap_key_and_print_the_scope(app):
    runner = app.test_cli_runner()
    create(app, "mcp-drive", "--providers", "google", "--users", "*@example.com",
           "--users", "ops@other.org", "--can", "token,status", "--expires-in", "90d")
    listed = runner.invoke(args=["apikeys", "list"]).output
    [drive] = [line for line in listed.splitlines() if line.startswith("mcp-drive ")]
    assert drive.endswith("providers=google users=*@example.com,ops@other.org can=token,status")
    [bootstrap] = [line for line in listed.splitlines() if line.startswith("bootstrap ")]
    assert "(not stored)" in bootstrap and bootstrap.endswith("[AUTH_GATEWAY_API_KEY]")
    shown = runner.invoke(args=["apikeys", "show", "mcp-drive"]).output
    assert "providers:  google\n" in shown and "can:        token, status\n" in shown
    assert "users:      *@example.com, ops@other.org\n" in shown and "state:      active" in shown
    assert runner.invoke(args=["init-db", "--seed"]).exit_code == 0
    shown = runner.invoke(args=["apikeys", "show", "bootstrap"]).output
    assert "(AUTH_GATEWAY_API_KEY)" in shown and "providers:  all" in shown
    assert runner.invoke(args=["apikeys", "show", "nobody"]).exit_code == 1


def test_the_client_raises_forbidden(live):
    headers = create(live.app, "mcp-init-only", "--can", "init")
    with GatewayClient(live.url, headers["X-API-Key"]) as gateway_client:
        with pytest.raises(Forbidden) as raised:
            gateway_client.get_token("google", ADA)
    assert raised.value.status == 403 and "'token' operation" in raised.value.message
    assert raised.value.auth_required is False
