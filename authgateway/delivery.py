"""Sending the outbox (``outbox.py``) at least once: the background worker of a serving
process, and `flask webhooks deliver` for cron.

Any number of processes deliver at once. A process claims due rows in a short transaction
(``FOR UPDATE SKIP LOCKED`` on PostgreSQL, the write lock on SQLite) that pushes their
``next_attempt_at`` past the time their sending can take, then sends without holding a lock:
no other process sees them until then, and if this one dies mid-send they are due again.
Each endpoint is sent to by one thread of a process at a time, so a receiver that hangs holds
up only its own deliveries.
"""

from __future__ import annotations

import json
import logging
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import Flask, current_app
from sqlalchemy import Row, select, update

from . import audit, metrics, outage
from .extensions import db
from .models import DELIVERED, FAILED, PENDING, utcnow
from .outbox import committed, deliveries, endpoints
from .storage import locked_transaction
from .webhooks import purge, secret_of, send

log = logging.getLogger(__name__)

#: The longest wait between two tries of one delivery.
MAX_DELAY_SECONDS = 3600.0
#: Rows one claim takes; a process sends each endpoint's share in order, in one thread.
CLAIM_SIZE = 20
#: Threads per process that send, one endpoint each at a time.
SENDERS = 8
#: A claim lasts twice as long as its sends may take, plus this, for the writes between them.
CLAIM_MARGIN_SECONDS = 5.0


def retry_delay(attempts: int, first: float) -> float:
    """Seconds before the next try after ``attempts`` failed ones: ``first``, doubling, up to
    MAX_DELAY_SECONDS, each within +-25% so that receivers coming back are not hit by every
    retry at once."""
    delay = min(first * 2 ** (attempts - 1), MAX_DELAY_SECONDS)
    # Spreading, not secrecy: any generator will do.
    return min(delay * random.uniform(0.75, 1.25), MAX_DELAY_SECONDS)  # noqa: S311


def claim(busy: set[int], limit: int = CLAIM_SIZE, due_by: datetime | None = None) -> list[Row]:
    """Take up to ``limit`` deliveries due by ``due_by`` (default now), none for an endpoint in
    ``busy``, away from every other process until they can have been sent."""
    config = current_app.config
    now = utcnow()
    due_by = due_by or now
    d, e = deliveries, endpoints
    query = (select(d.c.id, d.c.event_id, d.c.event_type, d.c.endpoint_id, d.c.payload,
                    d.c.attempts, d.c.created_at, e.c.url, e.c.secret_encrypted, e.c.key_id)
             .join(e, e.c.id == d.c.endpoint_id)
             .where(d.c.state == PENDING, d.c.next_attempt_at <= due_by)
             .order_by(d.c.next_attempt_at, d.c.id).limit(limit)
             # PostgreSQL only: SQLite has no row locks and is serialised by its write lock.
             .with_for_update(skip_locked=True, of=d))
    if busy:
        query = query.where(d.c.endpoint_id.not_in(busy))
    with locked_transaction(("webhooks", "claim")) as connection:
        rows = connection.execute(query).all()
        if rows:
            lease = timedelta(seconds=CLAIM_MARGIN_SECONDS
                              + 2 * len(rows) * config["WEBHOOK_TIMEOUT"])
            connection.execute(update(d).where(d.c.id.in_([row.id for row in rows]))
                               .values(next_attempt_at=now + lease))
    return rows


@dataclass(frozen=True)
class Outcome:
    status: int | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None


def send_claimed(rows: list[Row]) -> int:
    """Send one endpoint's claimed rows in order; returns how many were delivered. After a
    failure the rest wait with it, so a receiver that is down is tried once per retry, not
    once per event."""
    delivered = 0
    for position, row in enumerate(rows):
        try:
            outcome = Outcome(*send(row.url, secret_of(row), row.event_id, row.payload))
        except Exception:  # a bug or an unreadable secret must not lose the rest of the claim
            log.exception("webhook delivery %s could not be attempted", row.id)
            outcome = Outcome(None, "gateway_error")
        next_at = _settle(row, outcome)
        if outcome.ok:
            delivered += 1
            continue
        rest = [later.id for later in rows[position + 1:]]
        if rest:
            with db.engine.begin() as connection:
                connection.execute(update(deliveries).where(deliveries.c.id.in_(rest),
                                                            deliveries.c.state == PENDING)
                                   .values(next_attempt_at=next_at or utcnow()))
        break
    return delivered


def _settle(row: Row, outcome: Outcome) -> datetime | None:
    """Record one attempt; returns when the delivery is tried next (None: it is not)."""
    config = current_app.config
    now = utcnow()
    attempts = row.attempts + 1
    values: dict = dict(attempts=attempts, last_status=outcome.status, last_error=outcome.error)
    next_at = None
    if outcome.ok:
        values.update(state=DELIVERED, finished_at=now)
        result = "delivered"
    elif now - row.created_at >= timedelta(hours=config["WEBHOOK_RETRY_HOURS"]):
        values.update(state=FAILED, finished_at=now)
        result = "failed"
    else:
        next_at = now + timedelta(seconds=retry_delay(attempts,
                                                      config["WEBHOOK_RETRY_SECONDS"]))
        values.update(next_attempt_at=next_at)
        result = "retry"
    with db.engine.begin() as connection:
        connection.execute(update(deliveries).where(deliveries.c.id == row.id,
                                                    deliveries.c.state == PENDING)
                           .values(**values))
        if result == "failed":
            data = json.loads(row.payload).get("data", {})
            audit.record("webhook_failed", actor=None, user_email=data.get("user_email"),
                         provider=data.get("provider"), outcome=outcome.error or "failed",
                         detail=f"{row.event_type} {row.event_id} to endpoint "
                                f"{row.endpoint_id} after {attempts} attempts",
                         connection=connection)
    metrics.webhook_attempted(result)
    if result != "delivered":
        log.warning("webhook %s (%s) to endpoint %s: %s, attempt %d%s", row.event_id,
                    row.event_type, row.endpoint_id, outcome.error, attempts,
                    ", given up" if result == "failed" else "")
    return next_at


def deliver_due() -> int:
    """Send every due delivery, endpoints in parallel, and return how many were delivered:
    `flask webhooks deliver`, for cron."""
    delivered = 0
    app = current_app._get_current_object()
    # Only what was due when the run began: a delivery that fails here is retried by the next
    # run, not again and again by this one.
    started = utcnow()
    with ThreadPoolExecutor(SENDERS) as pool:
        while rows := claim(set(), due_by=started):
            per_endpoint: dict[int, list[Row]] = {}
            for row in rows:
                per_endpoint.setdefault(row.endpoint_id, []).append(row)
            futures = [pool.submit(_in_app, app, send_claimed, group)
                       for group in per_endpoint.values()]
            delivered += sum(future.result() for future in futures)
    return delivered


def _in_app(app: Flask, function, *args):
    with app.app_context():
        return function(*args)


# ---- the background worker -----------------------------------------------------------------

class Worker:
    """Delivers in the background of a serving process: at once for events this process
    commits (``outbox.committed``), every WEBHOOK_POLL_SECONDS for the others' and for
    retries. Purges old deliveries once an hour."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self._busy: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(SENDERS, thread_name_prefix="webhook-send")
        self._thread = threading.Thread(target=self._run, name="webhook-worker", daemon=True)
        self._purged_at: datetime | None = None

    def start(self) -> Worker:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        committed.set()
        self._thread.join(timeout)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _run(self) -> None:
        poll = self.app.config["WEBHOOK_POLL_SECONDS"]
        while not self._stop.is_set():
            committed.clear()
            try:
                with self.app.app_context():
                    self._round()
            except Exception as exc:  # the database restarting must not end the worker
                self._failed(exc, "webhook worker round failed; trying again in %.1f s", poll)
            committed.wait(poll)

    def _failed(self, exc: Exception, message: str, *args) -> None:
        """Log a failure, but one of the database being unavailable only through the outage's
        state, which says it once per outage: not a traceback a round while it lasts."""
        if outage.is_unavailable(exc):
            with self.app.app_context():
                outage.of(self.app).noticed(exc)
        else:
            log.exception(message, *args)

    def _round(self) -> None:
        with self._lock:
            busy = set(self._busy)
        if len(busy) < SENDERS:
            self._claim_and_send(busy)
        now = utcnow()
        if self._purged_at is None or now - self._purged_at > timedelta(hours=1):
            self._purged_at = now
            purge(self.app.config["WEBHOOK_KEEP_DAYS"])

    def _claim_and_send(self, busy: set[int]) -> None:
        """Claim due rows for endpoints no sender of this process is at, and start a sender
        for each, as far as senders are free. Claims that no sender could take are handed
        back at once: a claim waiting in a queue could outlive its lease and be sent twice."""
        rows = claim(busy, CLAIM_SIZE)
        per_endpoint: dict[int, list[Row]] = {}
        for row in rows:
            per_endpoint.setdefault(row.endpoint_id, []).append(row)
        free = SENDERS - len(busy)
        for endpoint_id, group in list(per_endpoint.items())[:free]:
            with self._lock:
                self._busy.add(endpoint_id)
            self._pool.submit(self._send, endpoint_id, group)
        handed_back = [row.id for group in list(per_endpoint.values())[free:] for row in group]
        if handed_back:
            with db.engine.begin() as connection:
                connection.execute(update(deliveries).where(deliveries.c.id.in_(handed_back))
                                   .values(next_attempt_at=utcnow()))
        if len(rows) == CLAIM_SIZE and not handed_back:
            committed.set()  # more may be due: look again at once

    def _send(self, endpoint_id: int, rows: list[Row]) -> None:
        try:
            _in_app(self.app, send_claimed, rows)
        except Exception as exc:
            self._failed(exc, "webhook delivery to endpoint %s failed", endpoint_id)
        finally:
            with self._lock:
                self._busy.discard(endpoint_id)
            committed.set()  # this endpoint's next rows may be due


def start_worker(app: Flask) -> Worker:
    worker = Worker(app).start()
    app.extensions["authgateway.webhook_worker"] = worker
    return worker
