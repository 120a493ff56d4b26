"""The audit trail: one row per thing that happened to a user's connection. Never a secret."""

from __future__ import annotations

from sqlalchemy import Connection, insert

from .extensions import db
from .models import AuditEvent, utcnow


def record(action: str, *, actor: str | None, user_email: str | None, provider: str | None,
           outcome: str = "ok", detail: str | None = None,
           connection: Connection | None = None) -> None:
    """Write an event in the caller's transaction: the ORM session's, or ``connection``'s."""
    values = dict(action=action, actor=actor, user_email=user_email, provider=provider,
                  outcome=outcome, detail=detail)
    if connection is None:
        db.session.add(AuditEvent(**values))
    else:
        connection.execute(insert(AuditEvent.__table__).values(created_at=utcnow(), **values))
