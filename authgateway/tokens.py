"""Credentials: store them, hand out a valid access token (refreshing once, under the row
lock), list them, revoke them."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, Row, delete, select, update

from . import audit
from .context import gateway
from .errors import (
    DecryptionFailedError,
    NotAuthenticatedError,
    ProviderMisconfiguredError,
    ProviderUnavailableError,
    RefreshFailedError,
)
from .extensions import db
from .models import ACTIVE, NEEDS_REAUTH, Credential, utcnow
from .providers import InvalidGrant, ProviderMisconfigured, ProviderUnavailable, TokenSet
from .storage import locked_transaction

log = logging.getLogger(__name__)

credentials = Credential.__table__


@dataclass(frozen=True)
class AccessToken:
    access_token: str
    token_type: str
    expires_at: datetime | None
    scopes: list[str]


def _read(connection: Connection, user_email: str, provider: str, *, lock: bool = False):
    query = select(credentials).where(
        credentials.c.user_email == user_email, credentials.c.provider == provider
    )
    if lock:
        query = query.with_for_update()
    return connection.execute(query).first()


def _valid_for(row: Row, seconds: float) -> bool:
    if row.access_token_encrypted is None:
        return False
    return row.expires_at is None or row.expires_at > utcnow() + timedelta(seconds=seconds)


def _decrypt(row: Row, column: str) -> str:
    try:
        return gateway().keyring.decrypt(getattr(row, column), row.key_id)
    except DecryptionFailedError as exc:
        log.error("credential %s (%s, %s) cannot be decrypted: %s", row.id, row.provider,
                  row.user_email, exc.reason)
        raise


def _answer(row: Row) -> AccessToken:
    return AccessToken(
        access_token=_decrypt(row, "access_token_encrypted"),
        token_type="Bearer",
        expires_at=row.expires_at,
        scopes=row.scopes.split(),
    )


def get_token(user_email: str, provider: str, *, min_valid_seconds: float,
              force_refresh: bool = False) -> AccessToken:
    """A token valid for at least ``min_valid_seconds``. The common case is one read, no lock."""
    with db.engine.connect() as connection:
        row = _read(connection, user_email, provider)
    if row is None:
        raise NotAuthenticatedError()
    if row.status == NEEDS_REAUTH:
        raise RefreshFailedError()
    if not force_refresh and _valid_for(row, min_valid_seconds):
        return _answer(row)
    return _refresh(row, min_valid_seconds, force_refresh)


def _refresh(seen: Row, min_valid_seconds: float, force_refresh: bool) -> AccessToken:
    gw = gateway()
    with locked_transaction(("credential", seen.id)) as connection:
        row = _read(connection, seen.user_email, seen.provider, lock=True)
        if row is None:
            raise NotAuthenticatedError()
        if row.status == NEEDS_REAUTH:
            raise RefreshFailedError()
        # Another worker refreshed while we waited for the lock: use its token.
        refreshed_meanwhile = row.access_token_encrypted != seen.access_token_encrypted
        if _valid_for(row, min_valid_seconds) and (refreshed_meanwhile or not force_refresh):
            return _answer(row)
        if row.refresh_token_encrypted is None:
            if _valid_for(row, 0) and not force_refresh:
                return _answer(row)
            _mark_needs_reauth(connection, row, "no_refresh_token")
            raise RefreshFailedError()
        refresh_token = _decrypt(row, "refresh_token_encrypted")
        try:
            tokens = gw.providers.refresh(row.provider, refresh_token=refresh_token)
        except InvalidGrant as exc:
            # We hold the lock and read this refresh token under it, so it is the current one:
            # the grant is really dead, not superseded by someone else's rotation.
            _mark_needs_reauth(connection, row, exc.code or "invalid_grant")
            raise RefreshFailedError() from None
        except ProviderUnavailable as exc:
            _record_failure(connection, row, exc.code or "unavailable")
            log.warning("refresh of credential %s at %s failed transiently: %s", row.id,
                        row.provider, exc)
            if _valid_for(row, 0) and not force_refresh:
                return _answer(row)
            raise ProviderUnavailableError() from None
        except ProviderMisconfigured as exc:
            _record_failure(connection, row, exc.code or "misconfigured")
            log.error("OPERATOR ACTION NEEDED: %s rejected the gateway's client credentials "
                      "(%s); check %s_CLIENT_ID and %s_CLIENT_SECRET", row.provider, exc.code,
                      row.provider.upper(), row.provider.upper())
            raise ProviderMisconfiguredError() from None
        values = _token_values(tokens, refresh_token_fallback=refresh_token,
                               scopes_fallback=row.scopes.split())
        now = utcnow()
        connection.execute(
            update(credentials).where(credentials.c.id == row.id).values(
                **values, last_refreshed_at=now, refresh_failures=0, last_error=None,
                last_error_at=None, updated_at=now,
            )
        )
        audit.record("token_refreshed", actor=None, user_email=row.user_email,
                     provider=row.provider, connection=connection)
    return AccessToken(access_token=tokens.access_token, token_type="Bearer",
                       expires_at=values["expires_at"], scopes=values["scopes"].split())


def _token_values(tokens: TokenSet, *, refresh_token_fallback: str | None,
                  scopes_fallback: list[str]) -> dict:
    """The columns a token response sets. Both ciphertexts share one key id, so a kept refresh
    token is encrypted again under the current key along with the new access token."""
    keyring = gateway().keyring
    refresh_token = tokens.refresh_token or refresh_token_fallback
    expires_at = (utcnow() + timedelta(seconds=tokens.expires_in)
                  if tokens.expires_in is not None else None)
    scopes = list(tokens.scopes) if tokens.scopes is not None else scopes_fallback
    return {
        "access_token_encrypted": keyring.encrypt(tokens.access_token),
        "refresh_token_encrypted": keyring.encrypt(refresh_token) if refresh_token else None,
        "key_id": keyring.primary_id,
        "expires_at": expires_at,
        "scopes": " ".join(scopes),
        "status": ACTIVE,
    }


def _mark_needs_reauth(connection: Connection, row: Row, error: str) -> None:
    now = utcnow()
    connection.execute(
        update(credentials).where(credentials.c.id == row.id).values(
            status=NEEDS_REAUTH, access_token_encrypted=None, refresh_token_encrypted=None,
            refresh_failures=row.refresh_failures + 1, last_error=error, last_error_at=now,
            updated_at=now,
        )
    )
    audit.record("refresh_failed", actor=None, user_email=row.user_email, provider=row.provider,
                 outcome=error, connection=connection)


def _record_failure(connection: Connection, row: Row, error: str) -> None:
    """Only the operator's bookkeeping changes: tokens, expiry, scopes and status stay."""
    connection.execute(
        update(credentials).where(credentials.c.id == row.id).values(
            refresh_failures=row.refresh_failures + 1, last_error=error, last_error_at=utcnow()
        )
    )
    audit.record("refresh_failed", actor=None, user_email=row.user_email, provider=row.provider,
                 outcome=error, connection=connection)


def store_credential(user_email: str, provider: str, subject: str, tokens: TokenSet,
                     requested: list[str]) -> list[str]:
    """Insert or replace the credential after a completed flow; return the granted scopes."""
    credential = db.session.scalar(
        select(Credential).where(Credential.user_email == user_email,
                                 Credential.provider == provider)
    )
    kept_refresh_token = None
    if credential is not None and credential.refresh_token_encrypted and credential.subject == subject:
        # Without prompt=consent a provider may send no new refresh token: keep the one we have.
        try:
            kept_refresh_token = gateway().keyring.decrypt(credential.refresh_token_encrypted,
                                                           credential.key_id)
        except DecryptionFailedError:
            kept_refresh_token = None
    values = _token_values(tokens, refresh_token_fallback=kept_refresh_token,
                           scopes_fallback=requested)
    now = utcnow()
    if credential is None:
        credential = Credential(user_email=user_email, provider=provider, created_at=now)
        db.session.add(credential)
    for name, value in values.items():
        setattr(credential, name, value)
    credential.subject = subject
    credential.authenticated_at = now
    credential.refresh_failures = 0
    credential.last_error = None
    credential.last_error_at = None
    return values["scopes"].split()


def revoke(user_email: str, provider: str, api_key_name: str | None) -> bool:
    """Revoke at the provider (refresh token, else access token), then forget the credential.
    Returns whether the provider confirmed the revocation."""
    gw = gateway()
    with db.engine.connect() as connection:
        seen = _read(connection, user_email, provider)
    if seen is None:
        raise NotAuthenticatedError()
    with locked_transaction(("credential", seen.id)) as connection:
        row = _read(connection, user_email, provider, lock=True)
        if row is None:
            raise NotAuthenticatedError()
        provider_revoked = False
        column, hint = (("refresh_token_encrypted", "refresh_token")
                        if row.refresh_token_encrypted else ("access_token_encrypted",
                                                             "access_token"))
        if getattr(row, column) is not None:
            try:
                token = _decrypt(row, column)
            except DecryptionFailedError:
                token = None
            if token is not None:
                provider_revoked = gw.providers.revoke(provider, token=token,
                                                       token_type_hint=hint)
        connection.execute(delete(credentials).where(credentials.c.id == row.id))
        audit.record("revoked", actor=api_key_name, user_email=user_email, provider=provider,
                     outcome="ok" if provider_revoked else "local_only", connection=connection)
    return provider_revoked


def user_providers(user_email: str) -> list[dict]:
    rows = db.session.scalars(
        select(Credential).where(Credential.user_email == user_email).order_by(Credential.provider)
    )
    return [
        {
            "provider": row.provider,
            "scopes": row.scopes.split(),
            "status": row.status,
            "authenticated_at": row.authenticated_at,
            "token_expires_at": row.expires_at,
        }
        for row in rows
    ]
