"""The tables. Every change to them is a migration in ``migrations/``."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.orm import Mapped, mapped_column

from .extensions import db

ACTIVE = "active"
NEEDS_REAUTH = "needs_reauth"

#: What kind of failure a credential's last refresh met (``last_error_kind``); ``last_error``
#: holds the provider's own code for people to read.
UNAVAILABLE = "unavailable"      # transient: network, timeout, 5xx, 429
MISCONFIGURED = "misconfigured"  # the provider refused the gateway's own client
INVALID_GRANT = "invalid_grant"  # the grant is dead: the user must connect again

PENDING = "pending"
COMPLETED = "completed"
FAILED = "failed"
DELIVERED = "delivered"


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes on both backends (SQLite stores no offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Credential(db.Model):
    """One user's grant at one provider. Tokens are Fernet ciphertext under key ``key_id``."""

    __tablename__ = "credentials"
    __table_args__ = (db.UniqueConstraint("user_email", "provider"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_email: Mapped[str] = mapped_column(String(320))
    provider: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str | None] = mapped_column(String(255))
    access_token_encrypted: Mapped[str | None] = mapped_column(Text)
    refresh_token_encrypted: Mapped[str | None] = mapped_column(Text)
    key_id: Mapped[str | None] = mapped_column(String(16), index=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    scopes: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default=ACTIVE)
    authenticated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_refreshed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    refresh_failures: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(String(64))
    last_error_kind: Mapped[str | None] = mapped_column(String(16))
    last_error_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The provider's ``account`` object (``authgateway.providers.TokenSet.account``), returned
    #: to callers with the token. None is SQL NULL, not a JSON ``null``.
    account: Mapped[dict | None] = mapped_column(JSON(none_as_null=True))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class AuthSession(db.Model):
    """One started flow. The state is kept only as a hash; the PKCE verifier only encrypted."""

    __tablename__ = "auth_sessions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    state_hash: Mapped[str] = mapped_column(String(64), unique=True)
    code_verifier_encrypted: Mapped[str] = mapped_column(Text)
    key_id: Mapped[str] = mapped_column(String(16), index=True)
    user_email: Mapped[str] = mapped_column(String(320))
    provider: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default=PENDING)
    error: Mapped[str | None] = mapped_column(String(64))
    api_key_name: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    #: Set once, atomically, when a callback claims the state: the guard against its reuse.
    consumed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ApiKey(db.Model):
    """A caller's key, kept as a SHA-256 hash with a short prefix people can recognise.

    Its scope: ``providers``, ``users`` (email patterns) and ``operations``, each a
    space-separated list, NULL for no limit. After a rotation the previous secret's hash stays
    in ``previous_key_hash`` until ``previous_expires_at``."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    providers: Mapped[str | None] = mapped_column(Text)
    users: Mapped[str | None] = mapped_column(Text)
    operations: Mapped[str | None] = mapped_column(Text)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    previous_key_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    previous_prefix: Mapped[str | None] = mapped_column(String(16))
    previous_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AuditEvent(db.Model):
    """Who did what for whom, and how it ended. Never a token or a secret."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_user_email_created_at", "user_email", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    actor: Mapped[str | None] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(32))
    user_email: Mapped[str | None] = mapped_column(String(320))
    provider: Mapped[str | None] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str | None] = mapped_column(String(255))


class RateLimit(db.Model):
    """Hits per limited key (``init:<api key name>``, ``bad_key:<address>``) in one fixed window,
    shared by every gateway process. Windows older than the longest limit are purged."""

    __tablename__ = "rate_limits"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    #: Unix time (seconds) at which the window began: a multiple of the limit's period.
    window_start: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    count: Mapped[int] = mapped_column(Integer)


class WebhookEndpoint(db.Model):
    """A URL that receives signed events. The signing secret is Fernet ciphertext under key
    ``key_id``, as tokens are; ``events`` is a space-separated list of types, NULL for all."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    url: Mapped[str] = mapped_column(String(2048), unique=True)
    events: Mapped[str | None] = mapped_column(Text)
    secret_encrypted: Mapped[str] = mapped_column(Text)
    key_id: Mapped[str] = mapped_column(String(16), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebhookDelivery(db.Model):
    """The outbox: one event for one endpoint, written in the transaction of the change it
    reports, and sent until the endpoint answers 2xx or the retries run out. ``event_id`` is
    the ``webhook-id`` of every attempt. A claimed row's ``next_attempt_at`` is pushed past the
    send's timeout, so a process that dies mid-send leaves it due again, never lost."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_state_next_attempt_at", "state",
                            "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[str] = mapped_column(String(64), index=True)
    event_type: Mapped[str] = mapped_column(String(64))
    endpoint_id: Mapped[int] = mapped_column(
        Integer, db.ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), index=True)
    payload: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default=PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


def render_item(type_, obj, autogen_context):
    """Autogenerate writes UTCDateTime as the plain column type it stores, so migrations do
    not import the app's code."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False
