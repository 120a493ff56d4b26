"""The database outage, as one process sees it: whether the database is down, since when, why,
and how many requests were refused meanwhile.

An outage is logged twice, whatever the traffic: one WARNING when it starts (with the cause),
one line when the database answers again (with how long it lasted and what was refused). Each
request in between is counted and answered 503 ``database_unavailable``, without a traceback."""

from __future__ import annotations

import logging
import math
import re
import sqlite3
import threading
import time

import psycopg
from flask import Flask, current_app
from sqlalchemy import exc as sa_exc
from sqlalchemy import text

from .errors import DatabaseUnavailableError
from .extensions import db

log = logging.getLogger(__name__)

#: What a database in trouble raises: it cannot be reached, dropped the connection, ran past
#: the statement timeout, or has no pooled connection free in time. Bugs (a wrong statement,
#: a violated constraint) are other classes and stay 500s.
UNAVAILABLE = (sa_exc.OperationalError, sa_exc.DisconnectionError, sa_exc.TimeoutError,
               psycopg.OperationalError, sqlite3.OperationalError)
#: Seconds between two checks, while down, that a request which did not fail found the
#: database back.
PROBE_INTERVAL = 1.0
_SECRET_IN_URL = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")
_SECRET_SETTING = re.compile(r"(password\s*=\s*)\S+", re.IGNORECASE)


def is_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, UNAVAILABLE):
        return True
    return isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated


def cause(exc: BaseException) -> str:
    """One line for the operator: the driver's own first line, without the SQL and parameters
    that SQLAlchemy appends, and without a password should one appear."""
    original = getattr(exc, "orig", None) or exc
    first = (str(original).strip().splitlines() or [""])[0]
    first = _SECRET_SETTING.sub(r"\1***", _SECRET_IN_URL.sub(r"\1***@", first))
    return f"{type(original).__name__}: {first[:300]}" if first else type(original).__name__


class DatabaseOutage:
    """Thread-safe state of one app's outage. ``active`` is read without the lock: a stale
    read costs one extra check, never a wrong answer."""

    def __init__(self, db_timeout: float) -> None:
        #: What Retry-After says: about one connect timeout, so that a caller's retry comes
        #: after the gateway has tried the database again at least once.
        self.retry_after = max(1, min(30, math.ceil(db_timeout)))
        self.active = False
        self._lock = threading.Lock()
        self._since = 0.0
        self._refused = 0
        self._next_probe = 0.0

    def refused(self, exc: BaseException) -> DatabaseUnavailableError:
        """Count a request refused because of ``exc``; the error to answer it with."""
        self.noticed(exc, count=True)
        return DatabaseUnavailableError(self.retry_after)

    def noticed(self, exc: BaseException, *, count: bool = False) -> None:
        """Record that the database failed; the first failure starts the outage and is logged,
        and drops the pooled connections, which died with the server's sessions: requests
        after the outage then open new ones instead of failing on each dead one in turn."""
        with self._lock:
            starting = not self.active
            if starting:
                self.active, self._since, self._refused = True, time.monotonic(), 0
                self._next_probe = self._since + PROBE_INTERVAL
            if count:
                self._refused += 1
        if starting:
            log.warning("database unavailable (%s): answering 503 database_unavailable until "
                        "it is back", cause(exc))
            if db.engine.dialect.name != "sqlite":  # a file has no server sessions to lose
                db.engine.dispose()

    def reached(self) -> None:
        """The database answered: end the outage, if there is one, with its one line."""
        if not self.active:
            return
        with self._lock:
            if not self.active:
                return
            self.active = False
            lasted, refused = time.monotonic() - self._since, self._refused
        log.warning("database available again after %.1f s; %d requests were refused meanwhile",
                    lasted, refused)

    def probe(self) -> None:
        """While down, at most once per PROBE_INTERVAL: ask the database whether it is back.
        Called after requests that did not fail, which may not have used the database."""
        now = time.monotonic()
        with self._lock:
            if not self.active or now < self._next_probe:
                return
            self._next_probe = now + PROBE_INTERVAL
        try:
            with db.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except Exception:  # still down; the request that asked has its answer regardless
            return
        self.reached()


def init_app(app: Flask) -> DatabaseOutage:
    outage = app.extensions["authgateway.outage"] = DatabaseOutage(app.config["DB_TIMEOUT"])
    return outage


def current() -> DatabaseOutage:
    return current_app.extensions["authgateway.outage"]


def of(app: Flask) -> DatabaseOutage:
    return app.extensions["authgateway.outage"]
