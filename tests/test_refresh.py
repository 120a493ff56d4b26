"""Token refresh in one process, on SQLite and PostgreSQL: one refresh however many ask,
rotating refresh tokens, every failure class answered as API.md says with the row compared
before and after, the hot path, and `flask tokens refresh`."""

from __future__ import annotations

import logging
import socket
import sqlite3
import threading
import time
from datetime import timedelta

import psycopg
import pytest
from sqlalchemy import select, update
from sqlalchemy.engine import make_url

from authgateway import tokens
from authgateway.context import gateway
from authgateway.extensions import db
from authgateway.models import Credential, utcnow
from tests.conftest import HEADERS
from tests.flow import connect, token
from tests.wire import Wire

EMAIL = "ada@example.com"
BOOKKEEPING = {"refresh_failures", "last_error", "last_error_kind", "last_error_at"}
credentials = Credential.__table__


# ---- helpers ---------------------------------------------------------------------------

def read_row(app, email: str = EMAIL) -> dict:
    """The raw credentials row, ciphertext and all."""
    with app.app_context(), db.engine.connect() as connection:
        row = connection.execute(
            select(credentials).where(credentials.c.user_email == email)
        ).first()
    return row._asdict()


def set_expiry(app, seconds_from_now: float, email: str | None = None) -> None:
    query = update(credentials).values(expires_at=utcnow() + timedelta(seconds=seconds_from_now))
    if email is not None:
        query = query.where(credentials.c.user_email == email)
    with app.app_context(), db.engine.begin() as connection:
        connection.execute(query)


def stored_refresh_token(app, email: str = EMAIL) -> str:
    row = read_row(app, email)
    with app.app_context():
        return gateway().keyring.decrypt(row["refresh_token_encrypted"], row["key_id"])


def assert_only_bookkeeping_changed(before: dict, after: dict) -> None:
    assert {k: v for k, v in after.items() if k not in BOOKKEEPING} == {
        k: v for k, v in before.items() if k not in BOOKKEEPING
    }
    assert after["refresh_failures"] == before["refresh_failures"] + 1
    assert after["last_error"] and after["last_error_at"] is not None


def storm(app, calls: int, **extra) -> list:
    """`calls` concurrent /auth/token requests, released together; returns the responses."""
    barrier = threading.Barrier(calls)
    answers: list = [None] * calls

    def call(i: int) -> None:
        client = app.test_client()
        barrier.wait()
        answers[i] = token(client, **extra)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert all(a is not None for a in answers), "a call never returned"
    return answers


@pytest.fixture
def closed_port():
    """A loopback port that is bound but not listening: connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


# ---- the hot path ------------------------------------------------------------------------

def test_a_valid_token_is_one_read_no_lock_no_write_no_upstream_call(make_app, google):
    # Unprepared statements, so that PostgreSQL's wire shows the read's SQL text.
    app = make_app(DB_PREPARE_THRESHOLD="none")
    client = app.test_client()
    connect(client)
    upstream_before = len(google.requests)
    with app.app_context(), Wire(db.engine) as wire:
        answer = tokens.get_token(EMAIL, "google", min_valid_seconds=300)
        trips, said = wire.take()
    assert google.token_is_live(answer.access_token)
    # One exchange: no BEGIN (IMMEDIATE or not) before the read, no COMMIT or ROLLBACK after.
    assert trips == 1, said
    [read] = wire.statements(said)
    assert read.startswith("SELECT ") and " FROM credentials " in read, read
    assert "FOR UPDATE" not in read, read
    assert len(google.requests) == upstream_before and google.refresh_count == 0


def test_an_expired_token_is_refreshed_once_and_stored(app, client, google):
    connect(client)
    first = token(client).get_json()["access_token"]
    set_expiry(app, -60)
    answer = token(client)
    assert answer.status_code == 200
    body = answer.get_json()
    assert body["access_token"] != first and google.token_is_live(body["access_token"])
    assert google.refresh_count == 1 and google.refresh_requests_with_scope == 0
    row = read_row(app)
    assert row["status"] == "active" and row["last_refreshed_at"] is not None
    assert row["expires_at"] > utcnow() + timedelta(seconds=3000)
    assert token(client).get_json()["access_token"] == body["access_token"]
    assert google.refresh_count == 1


def test_twenty_threads_cause_one_refresh_and_share_its_token(app, client, google):
    connect(client)
    set_expiry(app, -60)
    google.refresh_latency = 0.3
    answers = storm(app, 20)
    assert [a.status_code for a in answers] == [200] * 20
    assert len({a.get_json()["access_token"] for a in answers}) == 1
    assert google.refresh_count == 1


def test_a_lifetime_shorter_than_the_buffer_still_means_one_refresh(app, client, google):
    """Tokens that live 60 s are inside the 300 s buffer from birth: callers that waited for
    the lock take the token just refreshed instead of refreshing again, one after another."""
    google.access_token_ttl = 60
    connect(client)
    google.refresh_latency = 0.5
    answers = storm(app, 20)
    assert [a.status_code for a in answers] == [200] * 20
    assert len({a.get_json()["access_token"] for a in answers}) == 1
    assert google.refresh_count == 1


def test_a_lifetime_inside_the_buffer_is_named_to_the_operator_once(make_app, google, caplog,
                                                                     monkeypatch):
    """Every sequential call refreshes when tokens live no longer than the buffer (Keycloak's
    300 s against our 300 s). The operator is told once, with the setting that fixes it, and
    the setting does fix it."""
    monkeypatch.setattr(tokens, "_warned_short_lifetimes", set())
    google.access_token_ttl = 300
    client = make_app().test_client()
    with caplog.at_level(logging.WARNING, logger="authgateway.tokens"):
        connect(client)
        for _ in range(3):
            assert token(client).status_code == 200
    assert google.refresh_count == 3  # what the warning is about
    warnings = [r.getMessage() for r in caplog.records if "TOKEN_REFRESH_BUFFER" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("google issues access tokens that live 300 s")
    assert "AUTH_GATEWAY_TOKEN_REFRESH_BUFFER_SECONDS" in warnings[0]

    caplog.clear()
    client = make_app(TOKEN_REFRESH_BUFFER_SECONDS=100).test_client()
    with caplog.at_level(logging.WARNING, logger="authgateway.tokens"):
        connect(client)
        for _ in range(3):
            assert token(client).status_code == 200
    assert google.refresh_count == 3  # no more refreshes
    assert not [r for r in caplog.records if "TOKEN_REFRESH_BUFFER" in r.getMessage()]


def test_concurrent_force_refresh_callers_share_one_refresh(app, client, google):
    connect(client)
    google.refresh_latency = 0.3
    answers = storm(app, 10, force_refresh=True)
    assert [a.status_code for a in answers] == [200] * 10
    assert len({a.get_json()["access_token"] for a in answers}) == 1
    assert google.refresh_count == 1


def test_credentials_that_need_no_refresh_never_wait_on_the_lock(app, client, google,
                                                                  database_url):
    """The row lock of one credential is held elsewhere: a valid credential answers at once,
    while the expired one waits for the lock and then refreshes."""
    connect(client, "ada@example.com")
    connect(client, "bob@example.com")
    set_expiry(app, -60, "ada@example.com")
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        holder = sqlite3.connect(url.database, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # SQLite's write lock: what the refresh path takes
    else:
        holder = psycopg.connect(database_url)
        holder.execute("SELECT id FROM credentials WHERE user_email = %s FOR UPDATE",
                       ("ada@example.com",))
    waiting: dict = {}
    blocked = threading.Thread(
        target=lambda: waiting.update(answer=token(app.test_client(), "ada@example.com"))
    )
    try:
        blocked.start()
        started = time.monotonic()
        answer = token(client, "bob@example.com")
        elapsed = time.monotonic() - started
        assert answer.status_code == 200 and elapsed < 1.0
        time.sleep(0.3)
        assert "answer" not in waiting  # while the expired one really waits on the lock
    finally:
        holder.rollback()
        holder.close()
    blocked.join(timeout=10)
    assert waiting["answer"].status_code == 200
    assert google.refresh_count == 1


def test_a_refresh_committing_meanwhile_does_not_fail_another_request_write(app, client,
                                                                          google):
    """A request reads, a refresh commits in between, the request writes (a callback does
    this). On SQLite a transaction that read before another one committed cannot become a
    writer: it must not hold a read snapshot from its first SELECT on."""
    connect(client)
    connect(client, "bob@example.com")
    with app.app_context():
        bob = db.session.scalar(
            select(Credential).where(Credential.user_email == "bob@example.com"))
        tokens.get_token(EMAIL, "google", min_valid_seconds=0, force_refresh=True)
        bob.scopes += " extra"
        db.session.commit()
    assert google.refresh_count == 1
    assert read_row(app, "bob@example.com")["scopes"].endswith(" extra")


# ---- rotating refresh tokens -------------------------------------------------------------

def test_a_flow_completed_during_a_refresh_keeps_its_new_grant(app, client, google):
    """The person signs in again, granting more, while a refresh of their old grant is at the
    provider. The new grant is what stays: the flow waits for the credential's lock (the row
    lock on PostgreSQL, a lock outside the database on SQLite) and writes after the refresh."""
    drive = "https://www.googleapis.com/auth/drive"
    connect(client)
    set_expiry(app, -60)
    google.refresh_latency = 1.0
    refreshes = google.refresh_count
    answer = {}
    racer = threading.Thread(target=lambda: answer.update(response=token(app.test_client())))
    racer.start()
    google.wait_for_refresh(refreshes + 1)
    connect(client, scopes=[drive])
    racer.join(timeout=10)
    google.refresh_latency = 0.0

    assert answer["response"].status_code == 200, answer["response"].get_json()
    assert drive in read_row(app)["scopes"].split()
    final = token(client)
    assert drive in final.get_json()["scopes"]
    assert google.token_is_live(final.get_json()["access_token"])
    assert google.refresh_count == refreshes + 1


def test_rotating_refresh_tokens_survive_many_cycles(app, client, google):
    google.rotate_refresh_tokens = True
    connect(client)
    seen = {stored_refresh_token(app)}
    for cycle in range(12):
        if cycle % 2:
            set_expiry(app, -60)
            answer = token(client)
        else:
            answer = token(client, force_refresh=True)
        assert answer.status_code == 200, answer.get_json()
        current = stored_refresh_token(app)
        assert current not in seen  # the rotated one was stored with the new access token
        seen.add(current)
        assert google.token_is_live(current)  # the grant was never revoked for a reuse
    assert google.refresh_count == 12


def test_rotating_refresh_tokens_under_concurrency(app, client, google):
    google.rotate_refresh_tokens = True
    google.refresh_latency = 0.1
    connect(client)
    for wave in range(4):
        set_expiry(app, -60)
        answers = storm(app, 8, **({"force_refresh": True} if wave % 2 else {}))
        assert [a.status_code for a in answers] == [200] * 8
        assert google.token_is_live(stored_refresh_token(app))
    assert google.refresh_count >= 4
    assert token(client, force_refresh=True).status_code == 200
    assert google.token_is_live(stored_refresh_token(app))


# ---- failures ----------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["revoked_by_user", "injected"])
def test_invalid_grant_asks_for_reauthorization_and_a_new_flow_heals(app, client, google, how):
    connect(client)
    set_expiry(app, -60)
    if how == "revoked_by_user":
        google.revoke_grant_for(EMAIL)
    else:
        google.fail_next(400, "invalid_grant")
    answer = token(client)
    assert answer.status_code == 401
    detail = answer.get_json()["detail"]
    assert detail["error"] == "refresh_failed" and detail["auth_required"] is True
    row = read_row(app)
    assert row["status"] == "needs_reauth"
    assert row["access_token_encrypted"] is None and row["refresh_token_encrypted"] is None
    assert row["last_error"] == "invalid_grant" and row["refresh_failures"] == 1
    listed = client.get(f"/auth/providers/{EMAIL}", headers=HEADERS).get_json()
    assert [p["status"] for p in listed["providers"]] == ["needs_reauth"]

    # Later calls answer from the row alone: no upstream call for a dead grant.
    assert token(client).status_code == 401 and google.refresh_count == 1

    connect(client)
    listed = client.get(f"/auth/providers/{EMAIL}", headers=HEADERS).get_json()
    assert [p["status"] for p in listed["providers"]] == ["active"]
    healed = token(client)
    assert healed.status_code == 200 and google.token_is_live(healed.get_json()["access_token"])
    assert read_row(app)["refresh_failures"] == 0


FAILURES = {
    # id: (arrange(google), app overrides(closed_port), status, error, last_error)
    "500": (lambda g: g.fail_next(500), {}, 502, "provider_unavailable", "http_500"),
    "503_json": (lambda g: g.fail_next(503, "backend_error"), {}, 502, "provider_unavailable",
                 "backend_error"),
    "429": (lambda g: g.fail_next(429, "rate_limit_exceeded"), {}, 502, "provider_unavailable",
            "rate_limit_exceeded"),
    "malformed_200": (lambda g: g.fail_next(200, body="<html>proxy page</html>"), {}, 502,
                      "provider_unavailable", "malformed_response"),
    "hang": (lambda g: g.hang_next(3), {"PROVIDER_TIMEOUT": 0.5}, 502, "provider_unavailable",
             "timeout"),
    "refused": (lambda g: None,
                lambda port: {"GOOGLE_TOKEN_URL": f"http://127.0.0.1:{port}/token"}, 502,
                "provider_unavailable", "network_error"),
    "invalid_client": (lambda g: g.fail_next(401, "invalid_client"), {}, 502,
                       "provider_misconfigured", "invalid_client"),
    "unauthorized_client": (lambda g: g.fail_next(400, "unauthorized_client"), {}, 502,
                            "provider_misconfigured", "unauthorized_client"),
}


@pytest.mark.parametrize("case", list(FAILURES))
def test_a_failed_refresh_leaves_the_credential_exactly_as_it_was(
    make_app, client, google, closed_port, caplog, monkeypatch, case
):
    arrange, overrides, status, error, last_error = FAILURES[case]
    overrides = overrides(closed_port) if callable(overrides) else overrides
    gateway_app = make_app(**overrides) if overrides else client.application
    connect(client)  # through the healthy app: the flow needs the token endpoint
    set_expiry(gateway_app, -60)
    old_token = read_row(gateway_app)["access_token_encrypted"]
    before = read_row(gateway_app)
    arrange(google)
    # Alembic's fileConfig (migrations/env.py, run in-process by the fixtures) disables the
    # loggers that existed before it: switch ours back on to see what operators would.
    monkeypatch.setattr(logging.getLogger("authgateway.tokens"), "disabled", False)
    caplog.set_level(logging.WARNING, logger="authgateway")
    started = time.monotonic()
    answer = token(gateway_app.test_client())
    elapsed = time.monotonic() - started
    assert answer.status_code == status, answer.get_json()
    detail = answer.get_json()["detail"]
    assert detail["error"] == error and detail["auth_required"] is False
    after = read_row(gateway_app)
    assert_only_bookkeeping_changed(before, after)
    assert after["access_token_encrypted"] == old_token
    assert after["last_error"] == last_error
    assert after["last_error_kind"] == ("misconfigured" if error == "provider_misconfigured"
                                        else "unavailable")
    assert elapsed < 2.5  # the timeout bounds a hang
    if error == "provider_misconfigured":
        assert any(r.levelno >= logging.ERROR and "OPERATOR ACTION" in r.getMessage()
                   for r in caplog.records)
    if case != "refused":
        # The outage ends: the next call refreshes and the bookkeeping is cleared.
        healed = token(client)
        assert healed.status_code == 200
        assert read_row(gateway_app)["refresh_failures"] == 0


def test_a_still_valid_token_is_returned_when_the_refresh_fails_transiently(app, client,
                                                                          google):
    connect(client)
    original = token(client).get_json()["access_token"]
    set_expiry(app, 100)  # inside the 300 s buffer, but still valid
    before = read_row(app)
    google.fail_next(503)
    answer = token(client)
    assert answer.status_code == 200 and answer.get_json()["access_token"] == original
    assert google.refresh_count == 1
    assert_only_bookkeeping_changed(before, read_row(app))
    # A caller that says the token is bad (force_refresh) is told the truth instead.
    google.fail_next(503)
    forced = token(client, force_refresh=True)
    assert forced.status_code == 502
    assert forced.get_json()["detail"]["error"] == "provider_unavailable"


def test_waiters_share_a_failed_attempt_instead_of_queueing_more(app, client, google):
    """One upstream attempt per wave, success or failure: a failing provider is not hit once
    per waiting caller, and nobody waits for N timeouts in a row."""
    connect(client)
    set_expiry(app, -60)
    before = read_row(app)
    google.refresh_latency = 0.5
    google.fail_next(503, times=20)
    answers = storm(app, 10)
    assert [a.status_code for a in answers] == [502] * 10
    assert google.refresh_count == 1
    after = read_row(app)
    assert_only_bookkeeping_changed(before, after)


# ---- flask tokens refresh ----------------------------------------------------------------

def test_tokens_refresh_command_keeps_tokens_warm(app, client, runner, google):
    for name in ("expired", "soon", "later", "dead", "gone"):
        connect(client, f"{name}@example.com")
    set_expiry(app, -60, "expired@example.com")
    set_expiry(app, 100, "soon@example.com")
    set_expiry(app, 100, "dead@example.com")
    set_expiry(app, -60, "gone@example.com")
    google.revoke_grant_for("dead@example.com")
    with app.app_context(), db.engine.begin() as connection:  # already needs_reauth: skipped
        connection.execute(update(credentials).where(
            credentials.c.user_email == "gone@example.com").values(status="needs_reauth"))
    before_later = read_row(app, "later@example.com")

    result = runner.invoke(args=["tokens", "refresh", "--expiring-within", "600"])
    assert result.exit_code == 0, result.output
    assert "refreshed 2, needs_reauth 1, failed 0" in result.output
    assert google.refresh_count == 3
    assert read_row(app, "later@example.com") == before_later
    assert read_row(app, "dead@example.com")["status"] == "needs_reauth"
    for name in ("expired", "soon"):
        assert read_row(app, f"{name}@example.com")["expires_at"] > utcnow() + timedelta(
            seconds=600)

    # Run again: nothing is left to do. Then an outage: counted as failed, exit status 1.
    again = runner.invoke(args=["tokens", "refresh", "--expiring-within", "600"])
    assert "refreshed 0, needs_reauth 0, failed 0" in again.output and again.exit_code == 0
    set_expiry(app, -60, "later@example.com")
    before = read_row(app, "later@example.com")
    google.fail_next(503)
    failed = runner.invoke(args=["tokens", "refresh", "--expiring-within", "600"])
    assert "refreshed 0, needs_reauth 0, failed 1" in failed.output and failed.exit_code == 1
    assert_only_bookkeeping_changed(before, read_row(app, "later@example.com"))


def test_tokens_refresh_run_twice_at_once_refreshes_each_credential_once(app, client, google):
    """Two cron jobs at the same moment: the row lock makes the second skip what the first did."""
    for i in range(4):
        connect(client, f"user{i}@example.com")
    set_expiry(app, -60)
    google.refresh_latency = 0.2
    results: list = []

    def run() -> None:
        with app.app_context():
            results.append(tokens.refresh_expiring(600))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert google.refresh_count == 4
    assert sum(r["refreshed"] for r in results) == 4
    assert sum(r["failed"] + r["needs_reauth"] for r in results) == 0
