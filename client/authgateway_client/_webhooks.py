"""Receiving the gateway's webhooks: verify a request's Standard Webhooks signature and read it
as a typed event. The standard library alone: no dependency beyond the client's own."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

#: How far a request's ``webhook-timestamp`` may be from now: the specification's five minutes,
#: which bounds how long a captured request could be replayed.
TOLERANCE_SECONDS = 300


class WebhookVerificationError(ValueError):
    """The request is not a webhook signed with this secret, or is too old or too new: answer
    it with 400 and do not act on it."""


@dataclass(frozen=True)
class WebhookEvent:
    """One event. ``id`` is the ``webhook-id``: the same on every retry, so a receiver drops
    an id it has already handled."""

    id: str
    type: str
    timestamp: datetime
    provider: str
    user_email: str
    api_key: str | None
    #: The body's ``data`` as sent, including fields a newer gateway adds.
    data: dict = field(repr=False)


@dataclass(frozen=True)
class CredentialConnected(WebhookEvent):
    scopes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class CredentialScopesChanged(WebhookEvent):
    scopes: list[str] = field(default_factory=list)
    previous_scopes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class CredentialNeedsReauth(WebhookEvent):
    """The grant died: the person must connect again (start a flow for them)."""

    error: str = ""


@dataclass(frozen=True)
class CredentialRecovered(WebhookEvent):
    scopes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class CredentialRevoked(WebhookEvent):
    provider_revoked: bool = False


@dataclass(frozen=True)
class FlowFailed(WebhookEvent):
    code: str = ""
    session_id: str = ""


@dataclass(frozen=True)
class WebhookPing(WebhookEvent):
    """Sent by `flask webhooks test`."""


EVENT_CLASSES: dict[str, type[WebhookEvent]] = {
    "credential.connected": CredentialConnected,
    "credential.scopes_changed": CredentialScopesChanged,
    "credential.needs_reauth": CredentialNeedsReauth,
    "credential.recovered": CredentialRecovered,
    "credential.revoked": CredentialRevoked,
    "flow.failed": FlowFailed,
    "webhook.ping": WebhookPing,
}
_EXTRA = {"scopes", "previous_scopes", "error", "provider_revoked", "code", "session_id"}


def verify_webhook(payload: bytes | str, headers: Mapping[str, str], secret: str, *,
                   tolerance_seconds: float = TOLERANCE_SECONDS) -> WebhookEvent:
    """The event in ``payload`` (the request body exactly as received), once its signature
    per the Standard Webhooks specification checks out with ``secret`` (``whsec_...``, as
    `flask webhooks add` printed it). Raises ``WebhookVerificationError`` otherwise."""
    body = payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
    lower = {name.lower(): value for name, value in headers.items()}
    msg_id = lower.get("webhook-id")
    stamp = lower.get("webhook-timestamp")
    signatures = lower.get("webhook-signature")
    if not (msg_id and stamp and signatures):
        raise WebhookVerificationError("the webhook-id, -timestamp or -signature header is "
                                       "missing")
    try:
        sent_at = int(stamp)
    except ValueError:
        raise WebhookVerificationError("webhook-timestamp is not a number") from None
    if abs(time.time() - sent_at) > tolerance_seconds:
        raise WebhookVerificationError("webhook-timestamp is too far from now")
    signed = f"{msg_id}.{sent_at}.".encode() + body
    expected = base64.b64encode(hmac.new(_key(secret), signed, hashlib.sha256).digest())
    for versioned in signatures.split():
        version, _, signature = versioned.partition(",")
        if version == "v1" and hmac.compare_digest(signature.encode("ascii", "replace"),
                                                   expected):
            return parse_event(body, msg_id)
    raise WebhookVerificationError("no signature matches this secret")


def _key(secret: str) -> bytes:
    encoded = secret.removeprefix("whsec_")
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise WebhookVerificationError("the secret is not a whsec_ secret") from None
    if not key:
        raise WebhookVerificationError("the secret is empty")
    return key


def parse_event(body: bytes, msg_id: str | None = None) -> WebhookEvent:
    """A verified body as its typed event (``WebhookEvent`` itself for a type this client does
    not know)."""
    try:
        document = json.loads(body)
        data = document["data"]
        kind = EVENT_CLASSES.get(document["type"], WebhookEvent)
        extra = {name: data[name] for name in _EXTRA
                 if name in data and name in kind.__dataclass_fields__}
        return kind(id=data.get("id") or msg_id or "", type=document["type"],
                    timestamp=datetime.fromisoformat(document["timestamp"]),
                    provider=data.get("provider", ""), user_email=data.get("user_email", ""),
                    api_key=data.get("api_key"), data=data, **extra)
    except (ValueError, KeyError, TypeError) as exc:
        raise WebhookVerificationError(f"the body is not an event ({exc})") from None
