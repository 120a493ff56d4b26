"""The hot path stays cheap (issue 8): POST /auth/token for a valid token costs one database
round trip and writes nothing, and a valid API key costs no database work once it is cached.

What reaches the database is read on the wire, below SQLAlchemy and whatever bypasses it: on
PostgreSQL from libpq's own trace of the protocol (every ReadyForQuery ends one exchange, so a
BEGIN, a ROLLBACK or a pre-ping counts), on SQLite from sqlite3's trace of every statement it
runs (BEGIN and COMMIT included)."""

from __future__ import annotations

import os
import re
import tempfile

import psycopg
import pytest
from sqlalchemy import event

from authgateway import apikeys, storage
from authgateway.extensions import db
from tests.conftest import HEADERS
from tests.flow import connect, token

WRITE = re.compile(r"\b(INSERT|UPDATE|DELETE|REPLACE)\b", re.IGNORECASE)
#: The server's "ready" at the end of each exchange, with the transaction state it is left in.
READY_FOR_QUERY = re.compile(r"^B\t\d+\tReadyForQuery\t (\w)", re.MULTILINE)
#: More token calls than psycopg's prepare_threshold (5): the one-off extra round trip that
#: prepares the statement on the server is behind us before counting starts.
WARM_UP_CALLS = 8


class Wire:
    """What an engine's pooled connections send to the database, read between requests.

    Only connections opened after it is made are watched, so it empties the pool first."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.backend = engine.dialect.name
        self._sqlite: list[str] = []
        self._sqlite_connections: list = []
        self._fds: list[int] = []
        self._open: dict[int, tuple[object, int]] = {}  # id(pgconn) -> (pgconn, its trace fd)
        self._read: dict[int, int] = {}  # trace fd -> bytes taken so far
        engine.dispose()
        self._listeners = [("connect", self._connected), ("close", self._closing),
                           ("close_detached", self._closing)]
        for name, listener in self._listeners:
            event.listen(engine, name, listener)

    def _connected(self, dbapi_connection, _record) -> None:
        if self.backend == "sqlite":
            dbapi_connection.set_trace_callback(self._sqlite.append)
            self._sqlite_connections.append(dbapi_connection)
            return
        fd, path = tempfile.mkstemp(prefix="libpq-trace-")
        os.unlink(path)
        self._fds.append(fd)
        self._read[fd] = 0
        self._open[id(dbapi_connection.pgconn)] = (dbapi_connection.pgconn, fd)
        self._trace(dbapi_connection.pgconn, fd)

    def _closing(self, dbapi_connection, _record=None) -> None:
        # libpq writes its trace through stdio: flush it before the connection goes away.
        watched = self._open.pop(id(getattr(dbapi_connection, "pgconn", None)), None)
        if watched is not None:
            watched[0].untrace()

    @staticmethod
    def _trace(pgconn, fd: int) -> None:
        pgconn.trace(fd)
        pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)

    def take(self) -> tuple[int, str]:
        """Round trips since the last call, and what was said: sqlite3's statements, or
        libpq's trace of the messages both ways. Fails if a transaction was left open."""
        if self.backend == "sqlite":
            ran, self._sqlite[:] = list(self._sqlite), []
            assert not any(connection.in_transaction for connection in self._sqlite_connections)
            return len(ran), "\n".join(ran)
        for pgconn, fd in self._open.values():
            pgconn.untrace()  # flushes
            self._trace(pgconn, fd)
        trips, said = 0, ""
        for fd in self._fds:
            new = os.pread(fd, 1 << 20, self._read[fd])
            self._read[fd] += len(new)
            text = new.decode(errors="replace")
            states = READY_FOR_QUERY.findall(text)
            # I: idle, the connection's last exchange ended outside a transaction.
            assert states[-1:] in ([], ["I"]), f"a transaction was left open:\n{text}"
            trips, said = trips + len(states), said + text
        return trips, said

    def close(self) -> None:
        self.engine.dispose()
        for name, listener in self._listeners:
            event.remove(self.engine, name, listener)
        for pgconn, _fd in self._open.values():
            pgconn.untrace()
        for fd in self._fds:
            os.close(fd)


@pytest.fixture
def wired(make_app):
    """An app whose API key cache outlives the test, a connected user, and its wire."""
    wires = []

    def make(**overrides):
        app = make_app(APIKEY_CACHE_SECONDS=300, **overrides)
        client = app.test_client()
        connect(client)
        with app.app_context():
            wire = Wire(db.engine)  # the token read's engine shares this pool (autocommit_reader)
        wires.append(wire)
        return app, client, wire

    yield make
    for wire in wires:
        wire.close()


def test_a_cached_token_costs_one_round_trip_and_writes_nothing(wired):
    app, client, wire = wired()
    for _ in range(WARM_UP_CALLS):
        assert token(client).status_code == 200
    wire.take()
    for _ in range(5):
        answer = token(client)
        assert answer.status_code == 200, answer.get_json()
        trips, said = wire.take()
        assert trips == 1, f"{trips} round trips for one cached token:\n{said}"
        assert not WRITE.search(said), said


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
