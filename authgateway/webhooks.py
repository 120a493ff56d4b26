"""Webhook endpoints, signing and sending one request (Standard Webhooks), and what operators
do with deliveries. ``delivery.py`` sends the outbox (``outbox.py``).
"""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
import secrets
import socket
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import requests
from flask import current_app
from sqlalchemy import Row, delete, select, update
from standardwebhooks import Webhook

from . import audit, standard
from .context import gateway
from .events import PING, TYPES, Event
from .extensions import db
from .models import DELIVERED, FAILED, PENDING, utcnow
from .outbox import committed, deliveries, endpoints
from .version import __version__

log = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32


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
    if parts.username is not None or parts.password is not None:
        return "credentials"
    if parts.scheme == "http" and not standard.names_loopback(parts.hostname):
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



REFUSALS = {
    "bad_url": "is not an http(s) URL with a host",
    "credentials": "carries a user or password: leave them out, the signature tells the "
                   "receiver that the gateway sent the request",
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


def _shown(url: str) -> str:
    """The URL for the audit trail, without its query: a receiver may take a token there."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"[:255]


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
                     detail=_shown(url), connection=connection)
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
                     detail=_shown(url), connection=connection)


def secret_of(row: Row) -> str:
    """The endpoint row's signing secret, decrypted."""
    return gateway().keyring.decrypt(row.secret_encrypted, row.key_id)


def ping(url: str) -> tuple[int | None, str | None]:
    """Send a signed ``webhook.ping`` to the endpoint now; its status (None when it did not
    answer) and what went wrong."""
    with db.engine.connect() as connection:
        row = connection.execute(select(endpoints).where(endpoints.c.url == url)).first()
    if row is None:
        raise WebhookError("No endpoint has this URL (`webhooks list` shows them).")
    event = Event(PING, provider="", user_email="")
    return send(row.url, secret_of(row), event.id, json.dumps(event.body()))


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
