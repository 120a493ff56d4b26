"""The outbox: an event is written in the transaction of the change it reports, one row per
webhook endpoint that wants it, so a crash can neither lose it nor send it for a change that
rolled back. Plugins hear it once that transaction commits.

A function that changes a connection records its events with ``record`` inside an
``announced()`` block that ends where its transaction commits::

    with outbox.announced(), credential_transaction(row_id) as connection:
        ...
        outbox.record(Event(...), connection)
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from sqlalchemy import Connection, insert, select

from .context import gateway
from .events import Event
from .extensions import db
from .models import PENDING, WebhookDelivery, WebhookEndpoint, utcnow

log = logging.getLogger(__name__)

endpoints = WebhookEndpoint.__table__
deliveries = WebhookDelivery.__table__

#: Set when events commit: this process's webhook worker sends them at once instead of at its
#: next poll. Other processes find them by polling.
committed = threading.Event()

_pending: ContextVar[list[Event] | None] = ContextVar("authgateway_events", default=None)


def wants(filter_: str | None, event_type: str) -> bool:
    return filter_ is None or event_type in filter_.split()


def record(event: Event, connection: Connection | None = None) -> None:
    """Write ``event`` for every endpoint that wants it, in the caller's transaction: the ORM
    session's, or ``connection``'s."""
    connection = connection if connection is not None else db.session.connection()
    wanting = [row.id for row in connection.execute(select(endpoints.c.id, endpoints.c.events))
               if wants(row.events, event.type)]
    if wanting:
        now = utcnow()
        payload = json.dumps(event.body(), separators=(",", ":"))
        connection.execute(insert(deliveries), [
            dict(event_id=event.id, event_type=event.type, endpoint_id=endpoint_id,
                 payload=payload, state=PENDING, attempts=0, next_attempt_at=now,
                 created_at=now)
            for endpoint_id in wanting])
    pending = _pending.get()
    if pending is None:
        log.error("event %s %s was recorded outside outbox.announced(): no plugin hears it",
                  event.type, event.id)
    else:
        pending.append(event)


@contextmanager
def announced() -> Iterator[None]:
    """Announce the events recorded in the block to the plugins once it ends without an
    exception, that is once the transaction it wraps has committed. A block inside another
    leaves the announcing to the outer one."""
    if _pending.get() is not None:
        yield
        return
    token = _pending.set([])
    try:
        yield
        events = _pending.get() or []
    finally:
        _pending.reset(token)
    if not events:
        return
    committed.set()
    providers = gateway().providers
    for event in events:
        providers.announce(event)
