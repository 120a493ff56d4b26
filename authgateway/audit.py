"""The audit trail: one row per thing that happened to a user's connection. Never a secret.

Actions: flow_started, flow_completed, flow_failed, token_refreshed, refresh_failed, revoked,
grant_replaced (the grant a flow replaced, revoked at the provider: ``ok`` or ``not_revoked``),
reencrypted, webhook_added, webhook_removed, webhook_failed (a delivery given up), token_served,
and forbidden (a request outside its API key's scope: at most one row per key every
``REFUSAL_INTERVAL`` seconds per process, with the count of the others).
Tokens served are the hot path, so they are not written one by one: each process counts them
per (API key, user, provider) and writes one ``token_served`` row per key every
``AUTH_GATEWAY_AUDIT_FLUSH_SECONDS`` (and at exit), with the count, first and last time in
``detail``. ``flask audit tail`` shows the trail.
"""

from __future__ import annotations

import atexit
import logging
import re
import threading
import time
import weakref
from datetime import UTC, datetime, timedelta

from flask import Flask, current_app, g, has_request_context
from sqlalchemy import Connection, insert, select

from . import emails, metrics, outage
from .extensions import db
from .models import AuditEvent, utcnow

log = logging.getLogger(__name__)


def record(action: str, *, actor: str | None, user_email: str | None, provider: str | None,
           outcome: str = "ok", detail: str | None = None,
           connection: Connection | None = None) -> None:
    """Write an event in the caller's transaction: the ORM session's, or ``connection``'s.
    Without an ``actor``, the API key of the current request is the actor."""
    if actor is None and has_request_context():
        actor = g.get("api_key_name")
    values = dict(action=action, actor=actor, user_email=user_email, provider=provider,
                  outcome=outcome, detail=detail)
    metrics.audited(action, provider, outcome)
    if connection is None:
        db.session.add(AuditEvent(**values))
    else:
        connection.execute(insert(AuditEvent.__table__).values(created_at=utcnow(), **values))


#: Seconds between two ``forbidden`` rows of one API key in one process.
REFUSAL_INTERVAL = 60.0
_refusals_lock = threading.Lock()


def refusal(actor: str, user_email: str | None, provider: str | None, lacks: str) -> None:
    """Record a request its key's scope does not cover, in a transaction of its own; a key
    that keeps asking adds one row per interval, so it cannot flood the table."""
    metrics.refused(actor, lacks)
    now = time.monotonic()
    # API key name -> [monotonic time of its last row, refusals since], per app.
    refusals = current_app.extensions.setdefault("authgateway.refusals", {})
    with _refusals_lock:
        last = refusals.get(actor)
        if last is not None and now - last[0] < REFUSAL_INTERVAL:
            last[1] += 1
            return
        unwritten = last[1] if last is not None else 0
        refusals[actor] = [now, 0]
    detail = f"lacks={lacks}" + (f" refused_since_last_row={unwritten}" if unwritten else "")
    record("forbidden", actor=actor, user_email=user_email, provider=provider[:64]
           if provider else None, outcome="forbidden", detail=detail)
    db.session.commit()


def token_served(actor: str | None, user_email: str, provider: str) -> None:
    """Count one access token handed out; it is written later with the others."""
    served_tokens(current_app._get_current_object()).add(actor, user_email, provider)


def served_tokens(app: Flask) -> ServedTokens:
    counter = app.extensions.get("authgateway.served_tokens")
    if counter is None:
        counter = app.extensions.setdefault("authgateway.served_tokens", ServedTokens(app))
    return counter


class ServedTokens:
    """Tokens served by this process and not yet written: (actor, user, provider) -> count,
    first, last. The first count after a write arms a timer that writes them all."""

    def __init__(self, app: Flask) -> None:
        self._app = app
        self._interval = app.config["AUDIT_FLUSH_SECONDS"]
        self._counts: dict[tuple[str | None, str, str], list] = {}
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        _unwritten.add(self)

    def add(self, actor: str | None, user_email: str, provider: str) -> None:
        now = utcnow()
        with self._lock:
            entry = self._counts.get((actor, user_email, provider))
            if entry is None:
                self._counts[(actor, user_email, provider)] = [1, now, now]
            else:
                entry[0] += 1
                entry[2] = now
            self._arm()

    def flush(self) -> int:
        """Write one token_served row per key; returns how many. On failure the counts are kept
        for the next write."""
        with self._lock:
            counts, self._counts = self._counts, {}
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        if not counts:
            return 0
        rows = [
            dict(created_at=last, action="token_served", actor=actor, user_email=user_email,
                 provider=provider, outcome="ok",
                 detail=f"count={count} first={first.isoformat(timespec='seconds')} "
                        f"last={last.isoformat(timespec='seconds')}")
            for (actor, user_email, provider), (count, first, last) in counts.items()
        ]
        try:
            with self._app.app_context(), db.engine.begin() as connection:
                connection.execute(insert(AuditEvent.__table__), rows)
        except Exception as exc:
            if outage.is_unavailable(exc):
                with self._app.app_context():
                    outage.of(self._app).noticed(exc)  # logged once per outage
            else:
                log.exception("could not write %d token_served audit events; will retry",
                              len(rows))
            for key, (count, first, last) in counts.items():
                self._merge(key, count, first, last)
            return 0
        return len(rows)

    def _merge(self, key: tuple, count: int, first: datetime, last: datetime) -> None:
        with self._lock:
            entry = self._counts.setdefault(key, [0, first, last])
            entry[0] += count
            entry[1], entry[2] = min(entry[1], first), max(entry[2], last)
            self._arm()

    def _arm(self) -> None:
        """Under the lock: make sure a write is coming within the interval."""
        if self._timer is None:
            self._timer = threading.Timer(self._interval, self.flush)
            self._timer.daemon = True
            self._timer.start()


_unwritten: weakref.WeakSet[ServedTokens] = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    # A handler's stream may be closed by now: a failure is logged if it can be, silently if not.
    logging.raiseExceptions = False
    for counter in list(_unwritten):
        try:
            counter.flush()
        except RuntimeError:  # a retry cannot be scheduled at interpreter shutdown
            pass


AGE = re.compile(r"(\d+)\s*([smhd])")
AGE_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_since(value: str) -> datetime:
    """``10m``, ``2h``, ``7d`` ago, or an ISO 8601 time (UTC when it names no offset)."""
    value = value.strip()
    match = AGE.fullmatch(value)
    if match:
        return utcnow() - timedelta(**{AGE_UNITS[match.group(2)]: int(match.group(1))})
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def events(*, user_email: str | None = None, since: datetime | None = None,
           limit: int = 50) -> list[AuditEvent]:
    """The newest ``limit`` events (of one user, since a time), oldest first."""
    query = select(AuditEvent).order_by(AuditEvent.created_at.desc(), AuditEvent.id.desc())
    if user_email:
        query = query.where(AuditEvent.user_email == (emails.normalise(user_email) or user_email))
    if since is not None:
        query = query.where(AuditEvent.created_at >= since)
    return list(reversed(db.session.scalars(query.limit(limit)).all()))

