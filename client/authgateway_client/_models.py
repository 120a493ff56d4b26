"""The client's results: frozen dataclasses read from the gateway's JSON, times as aware
datetimes. Import them from the package, ``authgateway_client``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

#: What the provider says about the account a token belongs to (Slack's team, Microsoft's
#: tenant), as the provider's plugin documents it; None when the provider has none.
Account = Mapping[str, Any]


def _time(value: str | None) -> datetime | None:
    if value is None:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True)
class AuthFlow:
    """A started flow: send the person to ``auth_url``; poll with ``session_id``."""

    auth_url: str
    session_id: str
    expires_at: datetime

    @classmethod
    def from_json(cls, data: dict) -> AuthFlow:
        return cls(data["auth_url"], data["session_id"], _time(data["expires_at"]))


@dataclass(frozen=True)
class AuthStatus:
    """Where a flow stands. ``error`` is set when failed (``expired``, ``access_denied``...)."""

    status: str  # "pending" | "completed" | "failed"
    session_id: str
    user_email: str | None = None
    provider: str | None = None
    expires_at: datetime | None = None
    error: str | None = None

    @property
    def pending(self) -> bool:
        return self.status == "pending"

    @property
    def completed(self) -> bool:
        return self.status == "completed"

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    @classmethod
    def from_json(cls, data: dict) -> AuthStatus:
        return cls(data["status"], data["session_id"], data.get("user_email"),
                   data.get("provider"), _time(data.get("expires_at")), data.get("error"))


@dataclass(frozen=True)
class Token:
    """An access token for a user at a provider; its value is left out of the repr."""

    access_token: str = field(repr=False)
    token_type: str
    expires_at: datetime | None
    scopes: tuple[str, ...]
    account: Account | None = field(default=None, hash=False)

    @property
    def authorization(self) -> str:
        """The value of an ``Authorization`` header for the provider's API."""
        return f"{self.token_type} {self.access_token}"

    @classmethod
    def from_json(cls, data: dict) -> Token:
        return cls(data["access_token"], data.get("token_type") or "Bearer",
                   _time(data.get("expires_at")), tuple(data.get("scopes") or ()),
                   data.get("account"))


@dataclass(frozen=True)
class ProviderConnection:
    provider: str
    scopes: tuple[str, ...]
    status: str  # "active" | "needs_reauth"
    authenticated_at: datetime | None
    token_expires_at: datetime | None
    account: Account | None = field(default=None, hash=False)

    @property
    def needs_reauth(self) -> bool:
        return self.status == "needs_reauth"

    @classmethod
    def from_json(cls, data: dict) -> ProviderConnection:
        return cls(data["provider"], tuple(data.get("scopes") or ()), data["status"],
                   _time(data.get("authenticated_at")), _time(data.get("token_expires_at")),
                   data.get("account"))


@dataclass(frozen=True)
class UserProviders:
    """What one user has connected."""

    user_email: str
    providers: tuple[ProviderConnection, ...]

    def get(self, provider: str) -> ProviderConnection | None:
        return next((p for p in self.providers if p.provider == provider), None)

    @classmethod
    def from_json(cls, data: dict) -> UserProviders:
        return cls(data["user_email"],
                   tuple(ProviderConnection.from_json(p) for p in data["providers"]))


@dataclass(frozen=True)
class RevokeResult:
    """``provider_revoked`` is false when the provider could not confirm; the local copy is
    deleted either way."""

    success: bool
    message: str
    provider_revoked: bool

    @classmethod
    def from_json(cls, data: dict) -> RevokeResult:
        return cls(bool(data["success"]), data.get("message", ""), bool(data["provider_revoked"]))


@dataclass(frozen=True)
class Health:
    """The gateway's health; a degraded gateway (HTTP 503) is an answer, not an exception."""

    status: str  # "healthy" | "degraded"
    database: str
    encryption: str
    version: str | None

    @property
    def healthy(self) -> bool:
        return self.status == "healthy"

    @classmethod
    def from_json(cls, data: dict) -> Health:
        return cls(data["status"], data["database"], data["encryption"], data.get("version"))
