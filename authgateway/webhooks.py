"""Webhooks: endpoints, and the delivery of the outbox (``outbox.py``), signed per the Standard
Webhooks specification, at least once.

Any number of processes deliver at once. A process claims due rows in a short transaction
(``FOR UPDATE SKIP LOCKED`` on PostgreSQL, the write lock on SQLite) that pushes their
``next_attempt_at`` past the time their sending can take, then sends without holding a lock:
no other process sees them until then, and if this one dies mid-send they are due again.
Each endpoint is sent to by one thread of a process at a time, so a receiver that hangs holds
up only its own deliveries.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
import random
import secrets
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import requests
from flask import Flask, current_app
from sqlalchemy import Row, delete, select, update
from standardwebhooks import Webhook

from . import audit, metrics
from .context import gateway
from .events import PING, TYPES, Event
from .extensions import db
from .models import DELIVERED, FAILED, PENDING, utcnow
from .outbox import committed, deliveries, endpoints
from .storage import locked_transaction
from .version import __version__

log = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
#: The longest wait between two tries of one delivery.
MAX_DELAY_SECONDS = 3600.0
#: Rows one claim takes; a process sends each endpoint's share in order, in one thread.
CLAIM_SIZE = 20
#: Threads per process that send, one endpoint each at a time.
SENDERS = 8
#: How long past the sends' own timeouts a claim keeps other processes away.
CLAIM_MARGIN_SECONDS = 60.0


class WebhookError(ValueError):
    """A webhook command's input cannot be used; the message says why."""


# ---- endpoints -----------------------------------------------------------------------------

def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def refusal(url: str, allow_private: bool) -> str | None:
    """Why ``url`` may not receive webhooks, as a short code; None when it may. ``https``
    unless every address the host resolves to is loopback; a private, link-local or otherwise
    non-public address only with ``allow_private``."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "bad_url"
    if parts.scheme == "http" and not _names_loopback(parts.hostname):
        return "not_https"
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (OSError, ValueError):
        return "dns_failed"
    addresses = {ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos}
    loopback = all(address.is_loopback for address in addresses)
    if parts.scheme != "https" and not loopback:
        return "not_https"
    if not loopback and not allow_private and not all(a.is_global for a in addresses):
        return "private_address"
    return None


def _names_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


REFUSALS = {
    "bad_url": "is not an http(s) URL with a host",
    "dns_failed": "names a host that does not resolve",
    "not_https": "must use https (plain http only to loopback)",
    "private_address": "resolves to a private address; set AUTH_GATEWAY_WEBHOOK_ALLOW_PRIVATE=on "
                       "to allow receivers on private networks",
}


def _event_filter(event_types: list[str]) -> str | None:
    unknown = sorted(set(event_types) - set(TYPES))
    if unknown:
        raise WebhookError(f"Unknown event type {', '.join(unknown)}; the types are "
                           f"{', '.join(TYPES)}.")
    return " ".join(dict.fromkeys(event_types)) or None


def add_endpoint(url: str, event_types: list[str]) -> str:
    """Store an endpoint for ``event_types`` (all when empty); return its signing secret,
    which is shown this once."""
    problem = refusal(url, current_app.config["WEBHOOK_ALLOW_PRIVATE"])
    if problem:
        raise WebhookError(f"The URL {REFUSALS[problem]}.")
    filter_ = _event_filter(event_types)
    with db.engine.begin() as connection:
        if connection.scalar(select(endpoints.c.id).where(endpoints.c.url == url)) is not None:
            raise WebhookError("This URL is already an endpoint; remove it first to replace "
                               "its secret.")
        secret = new_secret()
        keyring = gateway().keyring
        connection.execute(endpoints.insert().values(
            url=url, events=filter_, secret_encrypted=keyring.encrypt(secret),
            key_id=keyring.primary_id, created_at=utcnow()))
        audit.record("webhook_added", actor="cli", user_email=None, provider=None,
                     detail=url[:255], connection=connection)
    return secret


def list_endpoints() -> list[Row]:
    """Each endpoint with its counts of pending and failed deliveries."""
    with db.engine.connect() as connection:
        rows = connection.execute(select(endpoints.c.id, endpoints.c.url, endpoints.c.events,
                                         endpoints.c.created_at).order_by(endpoints.c.id)).all()
        counts = {(endpoint_id, state): count for endpoint_id, state, count in connection.execute(
            select(deliveries.c.endpoint_id, deliveries.c.state, db.func.count())
            .where(deliveries.c.state.in_((PENDING, FAILED)))
            .group_by(deliveries.c.endpoint_id, deliveries.c.state))}
    return [(row, counts.get((row.id, PENDING), 0), counts.get((row.id, FAILED), 0))
            for row in rows]


def remove_endpoint(url: str) -> None:
    """Forget the endpoint and its deliveries."""
    with db.engine.begin() as connection:
        if not connection.execute(delete(endpoints).where(endpoints.c.url == url)).rowcount:
            raise WebhookError("No endpoint has this URL (`webhooks list` shows them).")
        audit.record("webhook_removed", actor="cli", user_email=None, provider=None,
                     detail=url[:255], connection=connection)


def _secret(row: Row) -> str:
    return gateway().keyring.decrypt(row.secret_encrypted, row.key_id)


def ping(url: str) -> tuple[int | None, str | None]:
    """Send a signed ``webhook.ping`` to the endpoint now; its status (None when it did not
    answer) and what went wrong."""
    with db.engine.connect() as connection:
        row = connection.execute(select(endpoints).where(endpoints.c.url == url)).first()
    if row is None:
        raise WebhookError("No endpoint has this URL (`webhooks list` shows them).")
    event = Event(PING, provider="", user_email="")
    return send(row.url, _secret(row), event.id, json.dumps(event.body()))


# ---- sending -------------------------------------------------------------------------------

def send(url: str, secret: str, event_id: str, payload: str) -> tuple[int | None, str | None]:
    """POST one signed event; the receiver's status (None when it did not answer) and, unless
    it answered 2xx, a short code saying what went wrong. No redirect is followed and the
    answer's body is never read."""
    config = current_app.config
    problem = refusal(url, config["WEBHOOK_ALLOW_PRIVATE"])
    if problem:
        return None, problem
    now = datetime.now(UTC)
    headers = {
        "webhook-id": event_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(event_id, now, payload),
        "content-type": "application/json",
        "user-agent": f"authgateway/{__version__}",
    }
    try:
        with requests.post(url, data=payload.encode("utf-8"), headers=headers, stream=True,
                           allow_redirects=False, timeout=config["WEBHOOK_TIMEOUT"]) as answer:
            status = answer.status_code
    except requests.Timeout:
        return None, "timeout"
    except requests.RequestException:
        return None, "unreachable"
    return status, None if 200 <= status < 300 else f"http_{status}"


def retry_delay(attempts: int, first: float) -> float:
    """Seconds before the next try after ``attempts`` failed ones: ``first``, doubling, up to
    MAX_DELAY_SECONDS, each within +-25% so that receivers coming back are not hit by every
    retry at once."""
    delay = min(first * 2 ** (attempts - 1), MAX_DELAY_SECONDS)
    # Spreading, not secrecy: any generator will do.
    return min(delay * random.uniform(0.75, 1.25), MAX_DELAY_SECONDS)  # noqa: S311


def claim(busy: set[int], limit: int = CLAIM_SIZE) -> list[Row]:
    """Take up to ``limit`` due deliveries, none for an endpoint in ``busy``, away from every
    other process until they can have been sent."""
    config = current_app.config
    now = utcnow()
    d, e = deliveries, endpoints
    query = (select(d.c.id, d.c.event_id, d.c.event_type, d.c.endpoint_id, d.c.payload,
                    d.c.attempts, d.c.created_at, e.c.url, e.c.secret_encrypted, e.c.key_id)
             .join(e, e.c.id == d.c.endpoint_id)
             .where(d.c.state == PENDING, d.c.next_attempt_at <= now)
             .order_by(d.c.next_attempt_at, d.c.id).limit(limit)
             # PostgreSQL only: SQLite has no row locks and is serialised by its write lock.
             .with_for_update(skip_locked=True, of=d))
    if busy:
        query = query.where(d.c.endpoint_id.not_in(busy))
    lease = timedelta(seconds=CLAIM_MARGIN_SECONDS + limit * config["WEBHOOK_TIMEOUT"])
    with locked_transaction(("webhooks", "claim")) as connection:
        rows = connection.execute(query).all()
        if rows:
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
            outcome = Outcome(*send(row.url, _secret(row), row.event_id, row.payload))
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
    with ThreadPoolExecutor(SENDERS) as pool:
        while rows := claim(set()):
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
            except Exception:  # the database restarting must not end the worker
                log.exception("webhook worker round failed; trying again in %.1f s", poll)
            committed.wait(poll)

    def _round(self) -> None:
        with self._lock:
            busy = set(self._busy)
        rows = claim(busy, CLAIM_SIZE)
        per_endpoint: dict[int, list[Row]] = {}
        for row in rows:
            per_endpoint.setdefault(row.endpoint_id, []).append(row)
        for endpoint_id, group in per_endpoint.items():
            with self._lock:
                self._busy.add(endpoint_id)
            self._pool.submit(self._send, endpoint_id, group)
        if len(rows) == CLAIM_SIZE:
            committed.set()  # more may be due: look again at once
        now = utcnow()
        if self._purged_at is None or now - self._purged_at > timedelta(hours=1):
            self._purged_at = now
            purge(self.app.config["WEBHOOK_KEEP_DAYS"])

    def _send(self, endpoint_id: int, rows: list[Row]) -> None:
        try:
            _in_app(self.app, send_claimed, rows)
        except Exception:
            log.exception("webhook delivery to endpoint %s failed", endpoint_id)
        finally:
            with self._lock:
                self._busy.discard(endpoint_id)
            committed.set()  # this endpoint's next rows may be due


def start_worker(app: Flask) -> Worker:
    worker = Worker(app).start()
    app.extensions["authgateway.webhook_worker"] = worker
    return worker


# ---- operators -----------------------------------------------------------------------------

def recent_deliveries(*, failed_only: bool = False, limit: int = 50) -> list[Row]:
    d, e = deliveries, endpoints
    query = (select(d.c.id, d.c.event_id, d.c.event_type, d.c.state, d.c.attempts,
                    d.c.last_status, d.c.last_error, d.c.created_at, d.c.next_attempt_at,
                    e.c.url).join(e, e.c.id == d.c.endpoint_id)
             .order_by(d.c.id.desc()).limit(limit))
    if failed_only:
        query = query.where(d.c.state == FAILED)
    with db.engine.connect() as connection:
        return list(reversed(connection.execute(query).all()))


def redeliver(delivery_id: int) -> None:
    """Send a delivery again, whatever its state, with the same webhook-id; its retry period
    starts again."""
    now = utcnow()
    with db.engine.begin() as connection:
        changed = connection.execute(update(deliveries).where(deliveries.c.id == delivery_id)
                                     .values(state=PENDING, next_attempt_at=now, created_at=now,
                                             finished_at=None)).rowcount
    if not changed:
        raise WebhookError(f"No delivery has id {delivery_id} (`webhooks deliveries` lists "
                           "them).")
    committed.set()


def purge(keep_days: int) -> int:
    """Delete delivered and failed deliveries finished more than ``keep_days`` ago."""
    cutoff = utcnow() - timedelta(days=keep_days)
    with db.engine.begin() as connection:
        return connection.execute(delete(deliveries).where(
            deliveries.c.state.in_((DELIVERED, FAILED)),
            deliveries.c.finished_at < cutoff)).rowcount
