"""Database engine behaviour both backends need, and the row lock the refresh path relies on."""

from __future__ import annotations

import copy
import fcntl
import itertools
import math
import os
import re
import threading
import time
import weakref
from collections import namedtuple
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import pq
from psycopg.adapt import PyFormat, Transformer
from sqlalchemy import Connection, Engine, Select, Table, event, make_url
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DisconnectionError

from .extensions import db

#: A pooled PostgreSQL connection that sat unused for longer than this is pinged before it is
#: handed out. A busy process reuses its connections within milliseconds and never pays the
#: round trip; a quiet one learns that the server restarted before a request fails on it.
IDLE_PING_SECONDS = 10.0
#: Connections are replaced after this long, whatever happens: a proxy or firewall that drops
#: old idle connections, or server-side state that grows with a session, never gets that far.
POOL_RECYCLE_SECONDS = 3600


def engine_options(url: str, pool_size: int, prepare_threshold: int | None = 5,
                   timeout: float = 5.0) -> dict:
    """``timeout`` bounds each wait on the database: for a pooled connection, for a new one,
    and (PostgreSQL) for one statement, so that a database in trouble is an error within
    seconds, never a request that hangs."""
    # As many connections again in overflow for bursts. LIFO: the connection handed out is the
    # one used last, so under light load the same few stay warm (their prepared statements too)
    # and the others age out of use.
    pool = {"pool_size": pool_size, "max_overflow": pool_size, "pool_use_lifo": True,
            "pool_timeout": timeout}
    if url.startswith("sqlite"):
        # Waits for SQLite's write lock instead of failing at once while another writer holds it.
        options = {"connect_args": {"timeout": 30, "check_same_thread": False}}
        if make_url(url).database not in (None, "", ":memory:"):  # in memory: one connection
            # The same pool as on PostgreSQL: with SQLAlchemy's default of 5, a sixth busy
            # thread would open and close a connection (and its WAL setup) on every request.
            options.update(pool)
        return options
    # No pool_pre_ping: it costs a round trip on every checkout, as much as the token read
    # itself. configure_engine pings only connections that were idle (IDLE_PING_SECONDS).
    # psycopg prepares a statement on the server after ``prepare_threshold`` executions; None
    # turns that off, which PgBouncer in transaction mode before 1.21 needs (docs/scale-out.md).
    # libpq's connect_timeout counts whole seconds (and at least 2). The statement timeout is
    # a startup parameter: no round trip per connection. PgBouncer refuses unknown startup
    # parameters; told to ignore this one, it does not apply it (docs/scale-out.md).
    return {**pool, "pool_recycle": POOL_RECYCLE_SECONDS,
            "connect_args": {"prepare_threshold": prepare_threshold,
                             "connect_timeout": max(2, math.ceil(timeout)),
                             "options": f"-c statement_timeout={round(timeout * 1000)}"}}


class RowReader:
    """Runs a SELECT that names one row and returns that row, on a connection from the engine's
    own pool but below SQLAlchemy's Connection: the token lookup, the hot path.

    Around a read of a few dozen microseconds, a Connection, its transaction bookkeeping, the
    execution context and the Result cost more CPU than the read itself. Here the statement is
    still written in SQLAlchemy and compiled by it, once per statement; the columns' own result
    processors decode the row as a Result would (UTCDateTime on SQLite, for one); and the pool
    is the engine's, with its limits and checkout events (the idle ping), so there is no second
    pool. What SQLAlchemy's cursor events would have shown is not emitted: the tests read the
    wire itself (tests/wire.py).

    On PostgreSQL the read is one round trip, with no BEGIN before it and no ROLLBACK after it:
    one libpq call below psycopg (_LibpqRead), or with ``raw`` off (PG_RAW_READ) psycopg's own
    cursor and prepared statements (_PsycopgRead). The libpq read leans on psycopg internals
    that a psycopg release may change: setup.cfg bounds psycopg's version to the releases
    tests/test_raw_read.py was run on, and that test checks each of them.
    """

    def __init__(self, engine: Engine, prepare: bool = True, raw: bool = True) -> None:
        self.engine = engine
        self._prepare = prepare
        self._raw = raw
        self._compiled: dict[Select, _CursorRead | _PsycopgRead | _LibpqRead] = {}

    def first(self, statement: Select, **params) -> tuple | None:
        read = self._compiled.get(statement)
        if read is None:
            dialect = self.engine.dialect
            if dialect.driver != "psycopg":
                read = _CursorRead(statement, dialect)
            elif self._raw:
                read = _LibpqRead(statement, dialect, self._prepare)
            else:
                read = _PsycopgRead(statement, dialect)
            self._compiled[statement] = read
        try:
            return self._first(read, params)
        except _Disconnected:
            # The server closed a connection that looked alive (a restart, a proxy's idle
            # timeout), or its session lost its prepared statements: it has left the pool. A
            # read is safe to repeat, once, on another connection.
            return self._first(read, params)

    def _first(self, read: _CursorRead | _PsycopgRead | _LibpqRead, params: dict) -> tuple | None:
        dialect = self.engine.dialect
        pooled = self.engine.raw_connection()
        try:
            row = read.fetch_one(pooled.driver_connection, params)
        except dialect.loaded_dbapi.Error as exc:
            # psycopg's cache of prepared statements cannot tell that the session lost them
            # (DISCARD ALL from a pooler): only a new connection starts with an empty cache.
            if (dialect.is_disconnect(exc, pooled.dbapi_connection, None)
                    or isinstance(exc, psycopg.errors.InvalidSqlStatementName)):
                pooled.invalidate(exc)  # as a Connection would: it leaves the pool
                raise _Disconnected() from exc
            raise
        finally:
            pooled.close()  # back to the pool, which rolls back whatever is left (nothing)
        return None if row is None else read.decode(row)


class _Disconnected(DisconnectionError):
    """RowReader's connection turned out to be closed by the server, or its session state
    lost."""


class _CompiledRead:
    """A SELECT compiled for one dialect: its SQL, how to pass its parameters, and how to
    decode its columns into a named tuple."""

    def __init__(self, statement: Select, dialect, compile_for=None) -> None:
        compiled = statement.compile(dialect=compile_for or dialect)
        self.sql = compiled.string
        self._compiled = compiled
        columns = list(statement.selected_columns)
        self._row = namedtuple("Row", [column.key for column in columns])  # noqa: PYI024
        self._processors = [column.type.dialect_impl(dialect).result_processor(dialect, None)
                            for column in columns]

    def parameters(self, params: dict):
        values = self._compiled.construct_params(params)
        if self._compiled.positional:
            return tuple(values[name] for name in self._compiled.positiontup)
        return values

    def decode(self, raw: tuple) -> tuple:
        return self._row._make(value if process is None or value is None else process(value)
                               for process, value in zip(self._processors, raw, strict=True))


class _CursorRead(_CompiledRead):
    """Through a DBAPI cursor (SQLite: no transaction begins before a write, configure_engine)."""

    def fetch_one(self, connection, params: dict) -> tuple | None:
        cursor = connection.cursor()
        try:
            cursor.execute(self.sql, self.parameters(params))
            return cursor.fetchone()
        finally:
            cursor.close()


class _PsycopgRead(_CompiledRead):
    """Through psycopg's cursor, which prepares the statement on the server after
    DB_PREPARE_THRESHOLD runs on a connection (never, when that is off). In autocommit for this
    one statement, so that psycopg sends no BEGIN before it; the pool finds the connection
    idle, with nothing to roll back."""

    def fetch_one(self, connection, params: dict) -> tuple | None:
        connection.autocommit = True
        try:
            return connection.execute(self.sql, self.parameters(params)).fetchone()
        finally:
            if not connection.broken:  # a broken one refuses the change and leaves the pool
                connection.autocommit = False


class _LibpqRead(_CompiledRead):
    """Through psycopg's libpq connection (psycopg.pq): ``PQexecPrepared``, one call that waits
    for the answer with the interpreter lock released, and psycopg's own loaders for the row.

    psycopg's cursor, around the same round trip, converts the query, runs a generator per
    step, and needs autocommit switched on and off again (_PsycopgRead): it costs the serving
    process more CPU than this read (docs/scale-out.md has the measurements). Nothing about
    the connection changes: with no BEGIN sent, the server runs the statement in a transaction
    of its own, as in autocommit, and psycopg finds the connection idle, as it left it.

    The statement is prepared once per connection, under a name of its own (psycopg's are
    ``_pg3_*``). With ``prepare`` off (DB_PREPARE_THRESHOLD unset, for PgBouncer in transaction
    mode before 1.21) it is sent whole every time instead, as an unnamed statement.

    What it takes from psycopg beyond its documented API, each checked by
    tests/test_raw_read.py: ``Connection.pgconn``; ``pq.PGconn.prepare``, ``exec_prepared`` and
    ``exec_params`` with text parameters and text results; ``pq.PGresult.status``,
    ``ntuples``, ``error_field`` and ``error_message``; and ``psycopg.adapt.Transformer`` built
    from the connection, with ``dump_sequence``, ``set_pgresult`` and ``load_row``.
    """

    _names = itertools.count()

    def __init__(self, statement: Select, dialect, prepare: bool) -> None:
        numbered = copy.copy(dialect)  # libpq takes $1, $2 where psycopg takes %(name)s
        numbered.paramstyle, numbered.positional = "numeric_dollar", True
        super().__init__(statement, dialect, compile_for=numbered)
        self._sql = self.sql.encode()
        self._name = f"authgateway_read_{next(self._names)}".encode() if prepare else None
        self._formats = [PyFormat.TEXT] * len(self._compiled.positiontup)
        # Per connection: its loaders, and (once it holds it) the prepared statement.
        self._ready: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def fetch_one(self, connection, params: dict, *, again: bool = True) -> tuple | None:
        loaders = self._ready.get(connection)
        if loaders is None:
            loaders = self._prepared_on(connection)
        values = loaders.dump_sequence(self.parameters(params), self._formats)
        pgconn = connection.pgconn
        if self._name is None:
            result = pgconn.exec_params(self._sql, values)
        else:
            result = pgconn.exec_prepared(self._name, values)
            if _sqlstate(result) == INVALID_SQL_STATEMENT_NAME and again:
                # The session lost it (DISCARD ALL, a pooler between us and the server):
                # prepare it again and run it, once.
                del self._ready[connection]
                return self.fetch_one(connection, params, again=False)
        _check(pgconn, result, pq.ExecStatus.TUPLES_OK)
        loaders.set_pgresult(result)
        return loaders.load_row(0, tuple) if result.ntuples else None

    def _prepared_on(self, connection) -> Transformer:
        if self._name is not None:
            _check(connection.pgconn, connection.pgconn.prepare(self._name, self._sql),
                   pq.ExecStatus.COMMAND_OK)
        loaders = self._ready[connection] = Transformer(connection)
        return loaders


INVALID_SQL_STATEMENT_NAME = "26000"


def _sqlstate(result) -> str | None:
    code = result.error_field(pq.DiagnosticField.SQLSTATE)
    return code.decode() if code else None


def _check(pgconn, result, expected) -> None:
    """Raise what psycopg's cursor would have raised for a failed call: a disconnect is an
    OperationalError on a connection that psycopg (and SQLAlchemy's is_disconnect) sees
    broken."""
    if result.status == expected:
        return
    message = (result.error_field(pq.DiagnosticField.MESSAGE_PRIMARY) or result.error_message
               or pgconn.error_message).decode(errors="replace").strip()
    code = _sqlstate(result)
    try:
        error = psycopg.errors.lookup(code) if code else psycopg.OperationalError
    except KeyError:  # a code this psycopg does not know
        error = psycopg.DatabaseError
    raise error(message or "the database answered nothing")


def insert_on_conflict(table: Table, dialect) -> postgresql.Insert | sqlite.Insert:
    """``INSERT`` into ``table`` that takes ``on_conflict_do_nothing`` or ``_do_update``: both
    backends speak ON CONFLICT, but SQLAlchemy builds it per dialect."""
    return (postgresql.insert if dialect.name == "postgresql" else sqlite.insert)(table)


def configure_engine(engine: Engine) -> None:
    if engine.dialect.name != "sqlite":
        _ping_idle_connections(engine)
        return

    # pysqlite's own transaction handling never emits BEGIN before a SELECT and cannot emit
    # BEGIN IMMEDIATE; SQLAlchemy's documented recipe hands transactions back to us.
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        if connection.get_execution_options().get("sqlite_immediate"):
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    # Any other transaction begins at its first write, with the write lock. A plain BEGIN
    # would pin a read snapshot at the first SELECT, and once another connection commits (a
    # refresh, the audit flush) that transaction can never write: SQLite fails it at once with
    # "database is locked", without waiting. So reads before the first write each see the
    # latest commit, as in PostgreSQL's READ COMMITTED, and writers queue on the write lock.
    @event.listens_for(engine, "before_cursor_execute")
    def _lock_before_first_write(_conn, cursor, statement, *_args) -> None:
        if not cursor.connection.in_transaction and _WRITE.match(statement):
            cursor.connection.execute("BEGIN IMMEDIATE")


def _ping_idle_connections(engine: Engine) -> None:
    """SQLAlchemy's documented pessimistic disconnect handling (a ping on checkout), limited to
    connections idle for more than IDLE_PING_SECONDS."""

    @event.listens_for(engine, "checkin")
    def _checkin(_dbapi_connection, record) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_connection, record, _proxy) -> None:
        idle_since = record.info.pop("idle_since", None)
        if idle_since is None or time.monotonic() - idle_since < IDLE_PING_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            # The pool drops this connection and hands out another one (a new one if need be).
            raise DisconnectionError("the pooled connection is dead") from exc


_WRITE = re.compile(r"\s*(INSERT|UPDATE|DELETE|REPLACE|CREATE|DROP|ALTER|SAVEPOINT)\b",
                    re.IGNORECASE)


_process_locks: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
_process_locks_guard = threading.Lock()


def _process_lock(key: object) -> threading.Lock:
    with _process_locks_guard:
        lock = _process_locks.get(key)
        if lock is None:
            lock = threading.Lock()
            _process_locks[key] = lock
        return lock


#: SQLite: how many lock files beside the database share out the credentials (by id, modulo
#: this). Two credentials on one file wait for each other's refresh: rare, and it costs only
#: time, never a second refresh.
CREDENTIAL_LOCK_FILES = 256


@contextmanager
def credential_transaction(credential_id: int, lock_wait: float) -> Iterator[Connection]:
    """A transaction in which a credential is read, the provider called, and the outcome
    written, while every other caller of this function for the same credential waits, across
    threads and processes: the refresh path's one-refresh rule, revocation, and the write of
    a completed flow.

    PostgreSQL: the caller reads the row ``FOR UPDATE``, which locks it until the commit.

    SQLite has no row locks, and its one write lock must not be held across a provider call
    (up to PROVIDER_TIMEOUT seconds): refreshes of different credentials would queue behind
    each other, each waiting for every slow provider call ahead of it. So the credential is
    locked outside the database: a lock per credential for this process's threads, and
    ``flock`` on a file beside the database for other processes, which the kernel releases if a
    process dies. The transaction takes the write lock at its first write (configure_engine),
    once the provider has answered. Writers that do not take this lock (a re-encryption, a
    gateway of an earlier version) may commit in between: the caller's writes must be
    conditional on what it read.

    ``lock_wait`` (seconds) replaces the statement timeout in this transaction: waiting for
    the lock means waiting for another holder's provider call, which may take longer than a
    statement is otherwise allowed.
    """
    engine = db.engine
    if engine.dialect.name != "sqlite":
        with engine.begin() as connection:
            connection.exec_driver_sql(
                f"SET LOCAL statement_timeout = {round(lock_wait * 1000):d}")
            yield connection
        return
    with (_process_lock(("credential", credential_id)),
          _lock_file(engine.url.database, credential_id % CREDENTIAL_LOCK_FILES),
          engine.connect() as connection, connection.begin()):
        yield connection


@contextmanager
def _lock_file(database: str | None, number: int) -> Iterator[None]:
    if database in (None, "", ":memory:"):  # no other process can open it
        yield
        return
    directory = Path(database + "-locks")  # beside the database, as its -wal and -shm are
    directory.mkdir(mode=0o700, exist_ok=True)
    # A descriptor of our own, closed at the end: flock locks belong to the open file, so
    # this excludes other threads' descriptors as well as other processes'.
    fd = os.open(directory / str(number), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


@contextmanager
def locked_transaction(key: object) -> Iterator[Connection]:
    """A transaction in which ``SELECT ... FOR UPDATE`` serialises the writers of the rows it
    reads, across threads and processes: what re-encryption needs, as it reads a batch and
    writes it back.

    PostgreSQL locks the rows themselves. SQLite has no row locks: a per-key lock keeps this
    process's threads in line without spinning, and BEGIN IMMEDIATE takes the database's write
    lock before the read, which serialises other processes too.
    """
    engine = db.engine
    if engine.dialect.name == "sqlite":
        with _process_lock(key), engine.connect() as connection:
            connection.execution_options(sqlite_immediate=True)
            with connection.begin():
                yield connection
    else:
        with engine.begin() as connection:
            yield connection
