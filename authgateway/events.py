"""What plugins and webhook receivers hear: one typed event per moment a user's connection
changes. Plain data, never a token or a secret."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

CONNECTED = "credential.connected"
SCOPES_CHANGED = "credential.scopes_changed"
#: The grant died (``invalid_grant`` or the provider's equivalent): the person must connect again.
NEEDS_REAUTH = "credential.needs_reauth"
#: A credential marked needs_reauth is active again: the person connected again.
RECOVERED = "credential.recovered"
REVOKED = "credential.revoked"
FLOW_FAILED = "flow.failed"
#: Sent by `flask webhooks test` only, never to plugins.
PING = "webhook.ping"

TYPES = (CONNECTED, SCOPES_CHANGED, NEEDS_REAUTH, RECOVERED, REVOKED, FLOW_FAILED)


@dataclass(frozen=True)
class Event:
    """``id`` is unique and stays the same across webhook retries (``webhook-id``); ``api_key``
    is the name of the API key that started the flow or asked for the change, when one did;
    ``data`` holds what the type adds (``scopes``, ``error``, ``code``)."""

    type: str
    provider: str
    user_email: str
    api_key: str | None = None
    data: dict = field(default_factory=dict)
    id: str = field(default_factory=lambda: "evt_" + uuid.uuid4().hex)
    time: datetime = field(default_factory=lambda: datetime.now(UTC))

    def body(self) -> dict:
        """The webhook body, in the shape the Standard Webhooks specification recommends."""
        return {
            "type": self.type,
            "timestamp": self.time.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "data": {"id": self.id, "provider": self.provider, "user_email": self.user_email,
                     "api_key": self.api_key, **self.data},
        }
