"""What really reaches the database, for tests that watch it: below SQLAlchemy, so that reads
which bypass its Connection (storage.RowReader, the token lookup) are seen like any other.

On PostgreSQL it is libpq's own trace of the protocol (every ReadyForQuery ends one exchange, so
a BEGIN, a ROLLBACK or a pre-ping counts); on SQLite, sqlite3's trace of every statement it runs
(BEGIN and COMMIT included)."""

from __future__ import annotations

import os
import re
import tempfile

import psycopg
from sqlalchemy import event

#: A write, in what the wire said or in one of its statements.
WRITE = re.compile(r"\b(INSERT|UPDATE|DELETE|REPLACE)\b", re.IGNORECASE)
#: The server's "ready" at the end of each exchange, with the transaction state it is left in.
READY_FOR_QUERY = re.compile(r"^B\t\d+\tReadyForQuery\t (\w)", re.MULTILINE)
#: Where one message of libpq's trace starts: direction, length, type.
_MESSAGE = re.compile(r"\n(?=[FB]\t\d+\t)")
#: The SQL of a simple Query, or of a Parse (named, for a statement psycopg prepares).
_SQL = re.compile(r'F\t\d+\t(?:Query\t|Parse\t "[^"]*") "(.*)"(?: \d+)*\n?', re.DOTALL)


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

    def __enter__(self) -> Wire:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def _connected(self, dbapi_connection, _record) -> None:
        if self.backend == "sqlite":
            # One statement a line (see statements()), whatever its own line breaks.
            dbapi_connection.set_trace_callback(
                lambda sql: self._sqlite.append(" ".join(sql.split())))
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

    def statements(self, said: str) -> list[str]:
        """The SQL statements in what take() returned, each on one line.

        On PostgreSQL a statement psycopg has prepared (after DB_PREPARE_THRESHOLD runs on one
        connection) is executed by name, without its text: to see every statement, make the
        app with DB_PREPARE_THRESHOLD="none"."""
        if self.backend == "sqlite":
            return said.splitlines()
        sent = (_SQL.fullmatch(message) for message in _MESSAGE.split(said))
        return [" ".join(match[1].split()) for match in sent if match]

    def take_statements(self) -> list[str]:
        """The SQL statements since the last take(), each on one line (see statements)."""
        return self.statements(self.take()[1])

    def close(self) -> None:
        self.engine.dispose()
        for name, listener in self._listeners:
            event.remove(self.engine, name, listener)
        for pgconn, _fd in self._open.values():
            pgconn.untrace()
        for fd in self._fds:
            os.close(fd)
