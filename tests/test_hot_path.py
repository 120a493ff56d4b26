"""The hot path stays cheap: POST /auth/token for a valid token costs one database
round trip and writes nothing, and a valid API key costs no database work once it is cached.

What reaches the database is read on the wire (tests/wire.py), below SQLAlchemy and whatever
bypasses it."""

from __future__ import annotations

import psycopg
import pytest

from authgateway import apikeys, storage, tokens
from authgateway.context import gateway
from authgateway.extensions import db
from authgateway.models import Credential, utcnow
from tests.conftest import HEADERS
from tests.flow import connect, token
from tests.wire import WRITE, Wire

#: More token calls than psycopg's prepare_threshold (5): the one-off extra round trip that
#: prepares the statement on the server is behind us before counting starts.
WARM_UP_CALLS = 8


@pytest.fixture
def wired(make_app):
    """An app whose API key cache outlives the test, a connected user, and its wire."""
    wires = []

    def make(**overrides):
        app = make_app(APIKEY_CACHE_SECONDS=300, **overrides)
        client = app.test_client()
        connect(client)
        with app.app_context():
            wire = Wire(db.engine)  # the token read (storage.RowReader) draws from this pool
        wires.append(wire)
        return app, client, wire

    yield make
    for wire in wires:
        wire.close()


@pytest.mark.parametrize("key", ["bootstrap", "scoped"])
def test_a_cached_token_costs_one_round_trip_and_writes_nothing(wired, key):
    """For a key of any scope: the scope is checked in memory, from the key's cache entry."""
    app, client, wire = wired()
    headers = HEADERS
    if key == "scoped":
        with app.app_context():
            headers = {"X-API-Key": apikeys.create_key("mcp-scoped", apikeys.Scope(
                providers=frozenset({"google"}), users=("*@example.com",),
                operations=frozenset({"token"})))}
    body = {"provider": "google", "user_email": "ada@example.com"}
    for _ in range(WARM_UP_CALLS):
        assert client.post("/auth/token", headers=headers, json=body).status_code == 200
    wire.take()
    for _ in range(5):
        answer = client.post("/auth/token", headers=headers, json=body)
        assert answer.status_code == 200, answer.get_json()
        trips, said = wire.take()
        assert trips == 1, f"{trips} round trips for one cached token:\n{said}"
        assert not WRITE.search(said), said


def test_webhooks_add_nothing_to_a_cached_token(wired):
    """With webhook endpoints configured and a delivery pending, a cached token still costs one
    round trip, and neither reads nor writes the webhook tables: events come only from changes."""
    app, client, wire = wired(DB_PREPARE_THRESHOLD="none")  # the wire names every table
    runner = app.test_cli_runner()
    assert runner.invoke(args=["webhooks", "add", "http://127.0.0.1:9/hook"]).exit_code == 0
    connect(client, email="grace@example.com")  # a pending delivery, never sent in this test
    body = {"provider": "google", "user_email": "ada@example.com"}
    for _ in range(WARM_UP_CALLS):
        assert client.post("/auth/token", headers=HEADERS, json=body).status_code == 200
    wire.take()
    for _ in range(5):
        assert client.post("/auth/token", headers=HEADERS, json=body).status_code == 200
        trips, said = wire.take()
        assert trips == 1 and "credentials" in said, said
        assert "webhook" not in said and not WRITE.search(said), said


@pytest.mark.parametrize("key", ["bootstrap", "stored"])
def test_a_valid_key_costs_no_database_work_once_cached(wired, key):
    """Neither api_keys nor rate_limits is read or written for a valid key after its first
    call: the key is verified from the in-process cache, and only wrong keys are counted."""
    # Unprepared statements, so that PostgreSQL's wire names the tables of every one of them.
    app, client, wire = wired(DB_PREPARE_THRESHOLD="none")
    headers = HEADERS
    if key == "stored":
        with app.app_context():
            headers = {"X-API-Key": apikeys.create_key("mcp-server")}
    wire.take()
    body = {"provider": "google", "user_email": "ada@example.com"}
    assert client.post("/auth/token", headers=headers, json=body).status_code == 200
    _trips, said = wire.take()
    if key == "stored":  # (the bootstrap key was cached by the flow that connected the user)
        assert "api_keys" in said, said
    for _ in range(WARM_UP_CALLS):
        assert client.post("/auth/token", headers=headers, json=body).status_code == 200
        _trips, said = wire.take()
        assert "credentials" in said, said  # the wire is watched
        assert "api_keys" not in said and "rate_limits" not in said, said


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # SQLite has no server
def test_a_connection_that_died_while_idle_is_replaced_before_use(wired, database_url, request,
                                                                   monkeypatch):
    """What pool_pre_ping did, paid only by connections that sat idle: after the database
    closed them (a restart, a proxy's idle timeout), the next request still succeeds."""
    app, client, _wire = wired()
    assert token(client).status_code == 200
    with psycopg.connect(request.getfixturevalue("postgres_url"), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE datname = current_database() AND pid <> pg_backend_pid()")
    monkeypatch.setattr(storage, "IDLE_PING_SECONDS", 0.0)
    answer = token(client)
    assert answer.status_code == 200, answer.get_json()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # SQLite has no server
def test_a_connection_that_died_while_in_use_costs_no_failed_request(wired, database_url,
                                                                     request):
    """Without the idle ping (the connections were used a moment ago), the read finds its
    connection closed by the server: it is dropped from the pool and the read is made again on
    a new one, so the caller still gets its token, and so does the next one."""
    app, client, _wire = wired()
    first = token(client)
    assert first.status_code == 200
    with psycopg.connect(request.getfixturevalue("postgres_url"), autocommit=True) as admin:
        killed = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()").fetchone()[0]
    assert killed >= 1
    for _ in range(3):
        answer = token(client)
        assert answer.status_code == 200, answer.get_json()
        assert answer.get_json()["access_token"] == first.get_json()["access_token"]


def test_the_pool_holds_a_connection_for_every_thread(make_app):
    """On SQLite as on PostgreSQL: with SQLAlchemy's default of 5 for a SQLite file, a sixth
    busy waitress thread opened and closed a connection on every request."""
    app = make_app()
    with app.app_context():
        assert db.engine.pool.size() == app.config["DB_POOL_SIZE"] >= app.config["THREADS"]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # prepared on a server
@pytest.mark.parametrize("raw", [True, False], ids=["raw-read", "psycopg-read"])
def test_a_session_that_lost_the_prepared_read_prepares_it_again(wired, raw):
    """A session can lose its prepared statements without losing the connection (DISCARD ALL
    from a pooler, which psycopg does not see): the read is prepared again and answers, with
    one failed attempt on the wire and no failed request."""
    app, client, wire = wired(PG_RAW_READ=raw)
    for _ in range(WARM_UP_CALLS):  # past psycopg's prepare_threshold too
        first = token(client)
        assert first.status_code == 200
    with app.app_context():
        pooled = db.engine.raw_connection()  # the one the read used (the pool is LIFO)
        pooled.driver_connection.pgconn.exec_(b"DEALLOCATE ALL")  # behind psycopg's back
        pooled.close()
    wire.take()
    answer = token(client)
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["access_token"] == first.get_json()["access_token"]
    sent = wire.take()[1]
    assert sent.count("ErrorResponse") == 1 and "26000" in sent  # the lost statement, once
    for _ in range(WARM_UP_CALLS):
        assert token(client).status_code == 200
    assert "ErrorResponse" not in wire.take()[1]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # prepared on a server
@pytest.mark.parametrize("raw,name", [(True, "authgateway_read_"), (False, "_pg3_")],
                         ids=["raw-read", "psycopg-read"])
@pytest.mark.parametrize("setting,named", [(None, 1), ("none", 0)])
def test_the_token_read_is_prepared_once_per_connection_unless_turned_off(wired, setting, named,
                                                                          raw, name):
    """Prepared once, then only bound and run; with DB_PREPARE_THRESHOLD=none (PgBouncer in
    transaction mode before 1.21, docs/scale-out.md) never prepared under a name, which another
    client on the same server connection could collide with or miss. The raw read prepares on
    first use, psycopg after prepare_threshold runs."""
    overrides = {} if setting is None else {"DB_PREPARE_THRESHOLD": setting}
    app, client, wire = wired(PG_RAW_READ=raw, **overrides)
    for _ in range(WARM_UP_CALLS):
        assert token(client).status_code == 200
    sent = wire.take()[1]
    assert sent.count(f'Parse\t "{name}') == named
    unnamed = sent.count('Parse\t ""')
    assert unnamed == WARM_UP_CALLS if not named else unnamed < WARM_UP_CALLS


def test_the_token_read_returns_every_column_as_the_orm_reads_it(make_app):
    """The token read bypasses the ORM (storage.RowReader; on SQLite the row travels as one
    JSON array): NULLs, non-ASCII text, characters JSON escapes and times to the microsecond
    come back exactly as SQLAlchemy's own Result returns them, on both backends."""
    app = make_app()
    stored = {"user_email": "zoë+\"quoted\"\\@example.com", "provider": "google",
              "access_token_encrypted": "gAAAA\u2028tab\there", "key_id": None,
              "expires_at": None, "scopes": "openid ✓ 'single'",
              "authenticated_at": utcnow().replace(microsecond=123456),
              "last_refreshed_at": None, "last_error_at": utcnow()}
    with app.app_context():
        db.session.add(Credential(**stored))
        db.session.commit()
        parameters = {"user_email": stored["user_email"], "provider": "google"}
        expected = db.session.execute(tokens._SEEN, parameters).one()
        read = gateway().reader.first(tokens._SEEN, **parameters)
        assert read is not None and read._asdict() == expected._asdict()
        assert read.user_email == stored["user_email"] and read.expires_at is None
        assert read.authenticated_at == stored["authenticated_at"]
        assert gateway().reader.first(tokens._SEEN, user_email="nobody@example.com",
                                      provider="google") is None


@pytest.mark.parametrize("scopes, status", [(["email", "profile"], 200),
                                            (["https://www.googleapis.com/auth/drive"], 403)])
def test_per_call_scopes_are_checked_on_the_row_already_read(wired, scopes, status):
    """Granted or missing, the scope check costs no round trip beyond the token read."""
    app, client, wire = wired()
    for _ in range(WARM_UP_CALLS):
        assert token(client, scopes=scopes).status_code == status
    wire.take()
    answer = token(client, scopes=scopes)
    assert answer.status_code == status, answer.get_json()
    trips, said = wire.take()
    assert trips == 1, f"{trips} round trips for one scoped token call:\n{said}"
    assert not WRITE.search(said), said
