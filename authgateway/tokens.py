"""Credentials: store them, hand out a valid access token (refreshing once, under the row
lock), list them, revoke them."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import Connection, Row, bindparam, delete, select, update

from . import audit, breaker, events, metrics, outbox
from .context import gateway
from .errors import (
    DecryptionFailedError,
    GatewayError,
    InsufficientScopeError,
    NotAuthenticatedError,
    ProviderMisconfiguredError,
    ProviderUnavailableError,
    RefreshFailedError,
)
from .extensions import db
from .models import (
    ACTIVE,
    INVALID_GRANT,
    MISCONFIGURED,
    NEEDS_REAUTH,
    UNAVAILABLE,
    Credential,
    utcnow,
)
from .providers import (
    InvalidGrant,
    ProviderError,
    ProviderInfo,
    ProviderMisconfigured,
    ProviderUnavailable,
    TokenSet,
)
from .storage import credential_transaction, insert_on_conflict

log = logging.getLogger(__name__)

credentials = Credential.__table__


@dataclass(frozen=True)
class AccessToken:
    access_token: str
    token_type: str
    expires_at: datetime | None
    scopes: list[str]
    #: The provider's account object stored with the credential (``TokenSet.account``).
    account: Mapping[str, object] | None = None


# The statements are built once: SQLAlchemy then finds the compiled SQL and the result's column
# map in its cache by the statement itself, instead of building and matching new ones per call.
_ONE_CREDENTIAL = (credentials.c.user_email == bindparam("user_email"),
                   credentials.c.provider == bindparam("provider"))
# Without the lock, the columns to answer from and to recognise, once under the lock, what
# changed meanwhile (_refresh_locked); each column fetched costs on every request.
_SEEN = select(*(credentials.c[name] for name in (
    "id", "user_email", "provider", "status", "access_token_encrypted", "key_id", "expires_at",
    "scopes", "authenticated_at", "last_refreshed_at", "last_error_at", "account",
))).where(*_ONE_CREDENTIAL)
_LOCKED = select(credentials).where(*_ONE_CREDENTIAL).with_for_update()


def _lock_wait() -> float:
    """How long a caller may wait for a credential's lock: its holder may be at the provider
    (discovery, then the call itself), then writing."""
    config = current_app.config
    return 2 * config["PROVIDER_TIMEOUT"] + config["DB_TIMEOUT"]


def _read(connection: Connection, user_email: str, provider: str, *, lock: bool = False):
    return connection.execute(_LOCKED if lock else _SEEN,
                              {"user_email": user_email, "provider": provider}).first()


def _valid_for(row: Row, seconds: float) -> bool:
    if row.access_token_encrypted is None:
        return False
    return row.expires_at is None or row.expires_at > utcnow() + timedelta(seconds=seconds)


def _decrypt(row: Row, column: str, *, cached: bool = False) -> str:
    keyring = gateway().keyring
    decrypt = keyring.decrypt_cached if cached else keyring.decrypt
    try:
        return decrypt(getattr(row, column), row.key_id)
    except DecryptionFailedError as exc:
        log.error("credential %s (%s, %s) cannot be decrypted: %s", row.id, row.provider,
                  row.user_email, exc.reason)
        raise


def _answer(row: Row) -> AccessToken:
    return AccessToken(
        access_token=_decrypt(row, "access_token_encrypted", cached=True),
        token_type="Bearer",
        expires_at=row.expires_at,
        scopes=row.scopes.split(),
        account=row.account,
    )


def get_token(user_email: str, provider: str, *, min_valid_seconds: float,
              force_refresh: bool = False, scopes: list[str] | None = None) -> AccessToken:
    """A token valid for at least ``min_valid_seconds``, whose grant covers ``scopes``. The
    common case is one read, no lock: one round trip to the database, outside any
    transaction (storage.RowReader)."""
    row = gateway().reader.first(_SEEN, user_email=user_email, provider=provider)
    if row is None:
        raise NotAuthenticatedError()
    if row.status == NEEDS_REAUTH:
        raise RefreshFailedError()
    if scopes:
        _check_scopes(row, scopes)
    if not force_refresh and _valid_for(row, min_valid_seconds):
        answer, how = _answer(row), "cached"
    else:
        answer, how = _refresh(row, min_valid_seconds, force_refresh)
    metrics.token_answered(provider, how)
    return answer


def _check_scopes(row: Row, wanted: list[str]) -> None:
    """Checked on the row already read, before any refresh: a grant that lacks a scope is not
    made to cover it by asking the provider, only by the person's consent."""
    info = gateway().providers.info(row.provider)
    missing = info.missing_scopes(row.scopes.split(), wanted)
    if missing:
        raise InsufficientScopeError(missing, (
            f"The user's {info.display_name} grant lacks {', '.join(missing)}: they were never "
            "asked for, or the user declined them on the consent screen. Start a flow with "
            "/auth/init for them; it asks for these together with what is already granted."))


def _refresh(seen: Row, min_valid_seconds: float,
             force_refresh: bool) -> tuple[AccessToken, str]:
    """Refresh ``seen`` (read without the lock) under its row lock. Returns the token and how it
    was obtained: ``refreshed`` (asked the provider), ``fresh`` (another worker's new token) or
    ``failed`` (the refresh failed transiently; this is the stored token, still valid)."""
    # The provider's slot is taken before the lock: a caller turned away holds nothing, and
    # waiting for the lock counts against the slots, since it holds a worker thread too.
    try:
        with breaker.breakers().guard(seen.provider).attempt() as attempt, \
                outbox.announced(), \
                credential_transaction(seen.id, _lock_wait()) as connection:
            outcome = _refresh_locked(connection, seen, min_valid_seconds, force_refresh,
                                      attempt)
    except breaker.Refused as refused:
        outcome = _not_attempted(seen, force_refresh, refused)
    # Raised only now, after the commit: a needs_reauth mark and the failure bookkeeping must
    # outlive the error they explain, not be rolled back with it.
    if isinstance(outcome, GatewayError):
        raise outcome
    return outcome


def _not_attempted(seen: Row, force_refresh: bool,
                   refused: breaker.Refused) -> tuple[AccessToken, str] | GatewayError:
    """The provider was not asked: answer with the token read, if it has a few seconds left."""
    if not force_refresh and _valid_for(seen, breaker.STALE_OK_SECONDS):
        return _answer(seen), "failed"
    info = gateway().providers.info(seen.provider)
    why = ("is not answering refreshes" if refused.reason == "open"
           else "is busy with as many refreshes as the gateway allows at once")
    return ProviderUnavailableError(
        f"{info.display_name} {why}; the stored credential is unchanged. Retry after "
        f"{refused.retry_after} s.", retry_after=refused.retry_after)


def _refresh_locked(connection: Connection, seen: Row, min_valid_seconds: float,
                    force_refresh: bool,
                    attempt: breaker.Attempt) -> tuple[AccessToken, str] | GatewayError:
    """Under the row lock: answer with what another worker settled meanwhile, else ask the
    provider once and store its answer."""
    row = _read(connection, seen.user_email, seen.provider, lock=True)
    if row is None:
        raise NotAuthenticatedError()
    if row.status == NEEDS_REAUTH:
        raise RefreshFailedError()
    settled = _settled_while_waiting(row, seen, min_valid_seconds, force_refresh)
    if settled is not None:
        return settled
    if row.refresh_token_encrypted is None:
        if _valid_for(row, 0) and not force_refresh:
            return _answer(row), "failed"
        _mark_needs_reauth(connection, row, "no_refresh_token")
        return RefreshFailedError()
    refresh_token = _decrypt(row, "refresh_token_encrypted")
    try:
        tokens = gateway().providers.refresh(row.provider, refresh_token=refresh_token)
    except ProviderUnavailable as exc:
        attempt.failed()
        return _refresh_refused(connection, row, exc, force_refresh)
    except (InvalidGrant, ProviderMisconfigured) as exc:
        attempt.answered()  # a refusal is an answer: the provider is up
        return _refresh_refused(connection, row, exc, force_refresh)
    attempt.answered()
    return _store_refreshed(connection, row, tokens, refresh_token)


def _settled_while_waiting(row: Row, seen: Row, min_valid_seconds: float,
                           force_refresh: bool) -> tuple[AccessToken, str] | GatewayError | None:
    """What another worker's refresh, or a completed flow, decided while we waited for the
    lock; None when nothing did and the provider must be asked."""
    # A renewed token is used even when it is valid for less than asked (a provider's lifetime
    # shorter than the buffer): it is as fresh as the provider makes them. Compared by time,
    # not ciphertext: re-encryption under a new key is not a new token.
    renewed = (row.last_refreshed_at, row.authenticated_at) != (seen.last_refreshed_at,
                                                                seen.authenticated_at)
    if (renewed and _valid_for(row, 0)) or (
            not force_refresh and _valid_for(row, min_valid_seconds)):
        return _answer(row), "fresh"
    if row.last_error_at is not None and row.last_error_at != seen.last_error_at:
        # Another worker's attempt failed meanwhile. Its outcome is shared, as its token would
        # be: one upstream call per wave of callers, so a failing provider is not hit once per
        # waiter and nobody waits for one timeout per caller ahead of it.
        if row.last_error_kind == MISCONFIGURED:
            return ProviderMisconfiguredError()
        return _transient_failure(row, force_refresh)
    return None


def _refresh_refused(connection: Connection, row: Row, exc: ProviderError,
                     force_refresh: bool) -> tuple[AccessToken, str] | GatewayError:
    """Record why the provider refused, by kind: a dead grant is marked, anything else changes
    only the bookkeeping."""
    if isinstance(exc, InvalidGrant):
        if _mark_needs_reauth(connection, row, exc.code or "invalid_grant"):
            return RefreshFailedError()
        return _newer_grant(connection, row)  # the grant refused is no longer the one stored
    if isinstance(exc, ProviderMisconfigured):
        _record_failure(connection, row, MISCONFIGURED, exc.code or "misconfigured")
        log.error("OPERATOR ACTION NEEDED: %s rejected the gateway's client credentials "
                  "(%s); check %s_CLIENT_ID and %s_CLIENT_SECRET", row.provider, exc.code,
                  row.provider.upper(), row.provider.upper())
        return ProviderMisconfiguredError()
    _record_failure(connection, row, UNAVAILABLE, exc.code or "unavailable")
    log.warning("refresh of credential %s at %s failed transiently: %s", row.id,
                row.provider, exc)
    return _transient_failure(row, force_refresh)


def _store_refreshed(connection: Connection, row: Row, tokens: TokenSet,
                     refresh_token: str) -> tuple[AccessToken, str] | GatewayError:
    values = _token_values(row.provider, tokens, refresh_token_fallback=refresh_token,
                           scopes_fallback=row.scopes.split())
    now = utcnow()
    # The rotated refresh token (if any) lands in this same write: the old one is never sent
    # again, since every refresh reads the refresh token under this lock.
    stored = connection.execute(
        update(credentials).where(*_same_grant(row)).values(
            **values, last_refreshed_at=now, refresh_failures=0, last_error=None,
            last_error_kind=None, last_error_at=None, updated_at=now,
        )
    ).rowcount == 1
    if not stored:
        # A flow completed without the credential's lock while we were at the provider: its
        # new grant wins, as it would have a moment later.
        return _newer_grant(connection, row)
    audit.record("token_refreshed", actor=None, user_email=row.user_email,
                 provider=row.provider, connection=connection)
    changed = _scopes_changed(row, values["scopes"].split())
    if changed is not None:
        outbox.record(changed, connection)
    answer = AccessToken(access_token=tokens.access_token, token_type="Bearer",
                         expires_at=values["expires_at"], scopes=values["scopes"].split(),
                         account=values.get("account", row.account))
    return answer, "refreshed"


def _same_grant(row: Row) -> tuple:
    """The condition under which a write made from ``row`` still applies: the credential is
    still there and still the grant we read. On PostgreSQL nothing else can write the row
    while we hold its lock. On SQLite a writer that does not take the credential's lock
    (storage.credential_transaction) can commit between our read and our write. A
    re-encryption changes only the ciphertexts, which a write from ``row`` replaces or
    leaves alone, so it is not a reason to drop the write. A flow that completes without the
    credential's lock (a gateway process of another version, mid-upgrade) changes
    ``authenticated_at``."""
    return credentials.c.id == row.id, credentials.c.authenticated_at == row.authenticated_at


def _newer_grant(connection: Connection, row: Row) -> tuple[AccessToken, str] | GatewayError:
    newer = _read(connection, row.user_email, row.provider, lock=True)
    if newer is None:
        return NotAuthenticatedError()
    if newer.status == NEEDS_REAUTH or not _valid_for(newer, 0):
        return RefreshFailedError()
    return _answer(newer), "fresh"


def _transient_failure(row: Row, force_refresh: bool) -> tuple[AccessToken, str] | GatewayError:
    """A token that is still valid beats an error, unless the caller said it is bad."""
    if _valid_for(row, 0) and not force_refresh:
        return _answer(row), "failed"
    return ProviderUnavailableError()


def _token_values(provider: str, tokens: TokenSet, *, refresh_token_fallback: str | None,
                  scopes_fallback: list[str]) -> dict:
    """The columns a token response sets. Both ciphertexts share one key id, so a kept refresh
    token is encrypted again under the current key along with the new access token."""
    _warn_if_outlived_by_buffer(provider, tokens.expires_in)
    keyring = gateway().keyring
    refresh_token = tokens.refresh_token or refresh_token_fallback
    expires_at = (utcnow() + timedelta(seconds=tokens.expires_in)
                  if tokens.expires_in is not None else None)
    scopes = list(tokens.scopes) if tokens.scopes is not None else scopes_fallback
    values = {
        "access_token_encrypted": keyring.encrypt(tokens.access_token),
        "refresh_token_encrypted": keyring.encrypt(refresh_token) if refresh_token else None,
        "key_id": keyring.primary_id,
        "expires_at": expires_at,
        "scopes": " ".join(scopes),
        "status": ACTIVE,
    }
    if tokens.account is not None:  # else the stored account stays
        values["account"] = dict(tokens.account)
    return values


_warned_short_lifetimes: set[str] = set()


def _warn_if_outlived_by_buffer(provider: str, expires_in: float | None) -> None:
    """Tell the operator, once per provider and process, when the provider's access tokens live
    no longer than the default refresh buffer (Keycloak's 300 s against our 300 s): every
    /auth/token call without min_valid_seconds then finds its token expiring "soon" and
    refreshes at the provider. API.md fixes what the buffer means; the operator sets it."""
    buffer = current_app.config["TOKEN_REFRESH_BUFFER_SECONDS"]
    if expires_in is None or expires_in > buffer or provider in _warned_short_lifetimes:
        return
    _warned_short_lifetimes.add(provider)
    log.warning("%s issues access tokens that live %d s, no longer than "
                "TOKEN_REFRESH_BUFFER_SECONDS (%d s): every /auth/token call that leaves out "
                "min_valid_seconds refreshes at the provider. Set "
                "AUTH_GATEWAY_TOKEN_REFRESH_BUFFER_SECONDS below that lifetime (a third of it, "
                "say), or lengthen the lifetime at the provider.", provider, expires_in, buffer)


def _mark_needs_reauth(connection: Connection, row: Row, error: str) -> bool:
    """Drop the tokens of a dead grant, unless a grant stored meanwhile replaced it: that is not
    the one that was refused. Returns whether the credential was marked."""
    now = utcnow()
    marked = connection.execute(
        update(credentials).where(*_same_grant(row)).values(
            status=NEEDS_REAUTH, access_token_encrypted=None, refresh_token_encrypted=None,
            refresh_failures=row.refresh_failures + 1, last_error=error,
            last_error_kind=INVALID_GRANT, last_error_at=now, updated_at=now,
        )
    ).rowcount == 1
    if marked:
        audit.record("refresh_failed", actor=None, user_email=row.user_email,
                     provider=row.provider, outcome=error, connection=connection)
        outbox.record(events.Event(events.NEEDS_REAUTH, row.provider, row.user_email,
                                   data={"error": error}), connection)
    return marked


def _record_failure(connection: Connection, row: Row, kind: str, error: str) -> None:
    """Only the operator's bookkeeping changes: tokens, expiry, scopes and status stay."""
    connection.execute(
        update(credentials).where(*_same_grant(row)).values(
            refresh_failures=row.refresh_failures + 1, last_error=error, last_error_kind=kind,
            last_error_at=utcnow(),
            # Kept, or the column's onupdate would stamp it: the credential itself is unchanged.
            updated_at=row.updated_at,
        )
    )
    audit.record("refresh_failed", actor=None, user_email=row.user_email, provider=row.provider,
                 outcome=error, connection=connection)


@dataclass(frozen=True)
class Stored:
    """What storing a flow's grant did."""

    scopes: list[str]
    #: The token (and its type hint) that revokes the grant this one replaced; None when
    #: nothing was replaced, the new answer carries the old grant on, or the provider does not
    #: revoke replaced grants (``ProviderInfo.revoke_replaced_grants``).
    replaced: tuple[str, str] | None = None


def store_credential(user_email: str, provider: str, subject: str, tokens: TokenSet,
                     requested: list[str], *, also: Callable[[Connection], None],
                     account: Mapping[str, object] | None = None,
                     api_key_name: str | None = None) -> Stored:
    """Insert or replace the credential after a completed flow, and run ``also`` in the same
    transaction; return the granted scopes and the replaced grant's token. ``account`` (the
    provider's account object, None for none) replaces the one stored: it describes this grant.
    The event it causes (connected, recovered or scopes_changed) names ``api_key_name``, the key
    that started the flow.

    Read and written under the credential's lock, as refresh and revoke hold it, so nothing
    commits in between: a revoke in flight finishes first, and this grant, newer than the
    revoke, is then stored as a new credential; of two flows completing at once, the later
    commit wins. Never a unique-constraint or stale-row error, which the person would see as
    a failed sign-in."""
    # Each turn that does not return saw another writer commit meanwhile (a flow that inserted
    # first, a revoke that deleted): the loop ends when they do.
    while True:
        with db.engine.connect() as connection:
            seen = _read(connection, user_email, provider)
        if seen is None:
            with outbox.announced(), db.engine.begin() as connection:
                values = _grant_values(provider, subject, tokens, requested, None, account)
                if _insert_if_absent(connection, user_email, provider, values):
                    also(connection)
                    outbox.record(_grant_event(None, values, user_email, provider,
                                               api_key_name), connection)
                    return Stored(values["scopes"].split())
            continue  # another flow's callback stored one first: replace it, under its lock
        with outbox.announced(), credential_transaction(seen.id, _lock_wait()) as connection:
            row = _read(connection, user_email, provider, lock=True)
            if row is not None:
                values = _grant_values(provider, subject, tokens, requested, row, account)
                info = gateway().providers.info(provider)
                replaced = _replaced_grant(row, tokens, info) if (
                    info.revoke_replaced_grants) else None
                connection.execute(update(credentials).where(credentials.c.id == row.id)
                                   .values(**values))
                also(connection)
                outbox.record(_grant_event(row, values, user_email, provider, api_key_name),
                              connection)
                return Stored(values["scopes"].split(), replaced)
        # Revoked while we waited for the lock: store this grant as a new credential.


def _grant_event(row: Row | None, values: dict, user_email: str, provider: str,
                 api_key_name: str | None) -> events.Event:
    """What a completed flow did to the credential ``row`` (None: there was none)."""
    scopes = values["scopes"].split()
    if row is not None and row.status == NEEDS_REAUTH:
        return events.Event(events.RECOVERED, provider, user_email, api_key_name,
                            {"scopes": scopes})
    changed = _scopes_changed(row, scopes, api_key_name) if row is not None else None
    return changed or events.Event(events.CONNECTED, provider, user_email, api_key_name,
                                   {"scopes": scopes})


def _scopes_changed(row: Row, scopes: list[str],
                    api_key_name: str | None = None) -> events.Event | None:
    """The scopes_changed event when ``scopes`` differ from the stored ``row``'s, else None."""
    previous = row.scopes.split()
    if set(previous) == set(scopes):
        return None
    return events.Event(events.SCOPES_CHANGED, row.provider, row.user_email, api_key_name,
                        {"scopes": scopes, "previous_scopes": previous})


class AccountMismatch(Exception):
    """A flow signed in as another subject than the credential's: nothing is stored."""


def _grant_values(provider: str, subject: str, tokens: TokenSet, requested: list[str],
                  row: Row | None, account: Mapping[str, object] | None) -> dict:
    """The columns a completed flow sets, over ``row`` (read under its lock) if there is one.
    The credential is pinned to its subject: a provider that lets an email move between
    accounts must not let another account take over the user's connection (revoke first)."""
    if row is not None and row.subject and row.subject != subject:
        raise AccountMismatch()
    kept_refresh_token = None
    if row is not None and row.refresh_token_encrypted and row.subject == subject:
        # Without prompt=consent a provider may send no new refresh token: keep the one we have.
        # Read under the lock, it is never one that a revoke or a rotation has just retired.
        try:
            kept_refresh_token = gateway().keyring.decrypt(row.refresh_token_encrypted,
                                                           row.key_id)
        except DecryptionFailedError:
            kept_refresh_token = None
    now = utcnow()
    return {
        **_token_values(provider, tokens, refresh_token_fallback=kept_refresh_token,
                        scopes_fallback=requested),
        "subject": subject, "authenticated_at": now, "refresh_failures": 0, "last_error": None,
        "last_error_kind": None, "last_error_at": None, "updated_at": now,
        "account": dict(account) if account is not None else None,
    }


def _insert_if_absent(connection: Connection, user_email: str, provider: str,
                      values: dict) -> bool:
    """Insert the credential unless one exists (committed, or inserted by a transaction that
    then commits): no unique-constraint error for the second of two flows completing at once."""
    statement = insert_on_conflict(credentials, connection.dialect).values(
        user_email=user_email, provider=provider, created_at=values["updated_at"], **values
    ).on_conflict_do_nothing(
        index_elements=[credentials.c.user_email, credentials.c.provider]
    ).returning(credentials.c.id)
    # A row back means inserted. rowcount cannot tell: on PostgreSQL SQLAlchemy adds RETURNING
    # anyway, and the rowcount is then -1 either way.
    return connection.execute(statement).first() is not None


def refresh_expiring(
    within_seconds: float,
    progress: Callable[[list], AbstractContextManager[Iterable]] = nullcontext,
) -> dict[str, int]:
    """Refresh every active credential that expires within ``within_seconds``, each through the
    same locked path as /auth/token: runs on several hosts at once refresh each one once.

    ``progress`` wraps the list of credentials (``click.progressbar`` fits). Returns counts:
    ``refreshed``, ``needs_reauth``, ``failed``, and ``fresh`` (someone else refreshed it)."""
    horizon = utcnow() + timedelta(seconds=within_seconds)
    with db.engine.connect() as connection:
        due = connection.execute(
            select(credentials.c.user_email, credentials.c.provider).where(
                credentials.c.status == ACTIVE,
                credentials.c.refresh_token_encrypted.is_not(None),
                credentials.c.expires_at < horizon,
            ).order_by(credentials.c.expires_at)
        ).all()
    counts = dict.fromkeys(("refreshed", "needs_reauth", "failed", "fresh"), 0)
    with progress(due) as items:
        for user_email, provider in items:
            counts[_refresh_due(user_email, provider, within_seconds)] += 1
    return counts


def _refresh_due(user_email: str, provider: str, within_seconds: float) -> str:
    # Read again: in a long run the list is minutes old, and another host may have been here.
    with db.engine.connect() as connection:
        seen = _read(connection, user_email, provider)
    if seen is None or seen.status != ACTIVE or _valid_for(seen, within_seconds):
        return "fresh"
    try:
        return _refresh(seen, within_seconds, force_refresh=False)[1]
    except RefreshFailedError:
        return "needs_reauth"
    except NotAuthenticatedError:  # revoked meanwhile
        return "fresh"
    except GatewayError as exc:
        log.warning("credential %s (%s) was not refreshed: %s", seen.id, provider, exc.code)
        return "failed"


def _grant_token(row: Row, info: ProviderInfo) -> tuple[str, str] | None:
    """The token that revokes the grant ``row`` holds, and its type hint: the refresh token
    (RFC 7009: revoking it ends the grant), else the access token, or the access token when
    the provider revokes by it. None when the row holds none that decrypts."""
    by_access = info.revoke_with == "access_token" and row.access_token_encrypted is not None
    column, hint = (("refresh_token_encrypted", "refresh_token")
                    if row.refresh_token_encrypted and not by_access
                    else ("access_token_encrypted", "access_token"))
    if getattr(row, column) is None:
        return None
    try:
        return _decrypt(row, column), hint
    except DecryptionFailedError:
        return None


def _replaced_grant(row: Row, tokens: TokenSet, info: ProviderInfo) -> tuple[str, str] | None:
    """The token of the grant that ``tokens`` replace; None when they carry it on (no new
    refresh token: the stored one is kept, its grant goes on)."""
    if tokens.refresh_token is None and row.refresh_token_encrypted:
        return None
    old = _grant_token(row, info)
    if old is None or old[0] in (tokens.access_token, tokens.refresh_token):
        return None
    return old


def revoke_replaced(user_email: str, provider: str, actor: str | None,
                    replaced: tuple[str, str]) -> bool:
    """Revoke at the provider the grant a completed flow replaced, and audit it as
    ``grant_replaced``. Best effort, after the new credential is committed: never raises."""
    token, hint = replaced
    try:
        revoked = gateway().providers.revoke(provider, token=token, token_type_hint=hint)
    except Exception as exc:
        log.warning("revoking the grant replaced for a user of %s failed: %s", provider,
                    getattr(exc, "code", None) or type(exc).__name__)
        revoked = False
    try:
        with db.engine.begin() as connection:
            audit.record("grant_replaced", actor=actor, user_email=user_email,
                         provider=provider, outcome="ok" if revoked else "not_revoked",
                         connection=connection)
    except Exception:
        log.warning("the audit event of a replaced grant of %s was not written", provider,
                    exc_info=True)
    return revoked


def revoke(user_email: str, provider: str, api_key_name: str | None) -> bool:
    """Revoke at the provider (refresh token, else access token), then forget the credential.
    Returns whether the provider confirmed the revocation."""
    gw = gateway()
    with db.engine.connect() as connection:
        seen = _read(connection, user_email, provider)
    if seen is None:
        raise NotAuthenticatedError()
    with outbox.announced(), credential_transaction(seen.id, _lock_wait()) as connection:
        row = _read(connection, user_email, provider, lock=True)
        if row is None:
            raise NotAuthenticatedError()
        provider_revoked = False
        grant = _grant_token(row, gw.providers.info(provider))
        if grant is not None:
            provider_revoked = gw.providers.revoke(provider, token=grant[0],
                                                   token_type_hint=grant[1])
        # Flows wait for this lock (store_credential). A grant stored without it while we were
        # at the provider is not the one revoked there: it stays, as it would have had its
        # flow completed a moment later.
        if connection.execute(delete(credentials).where(*_same_grant(row))).rowcount:
            outbox.record(events.Event(events.REVOKED, provider, user_email, api_key_name,
                                       {"provider_revoked": provider_revoked}), connection)
        audit.record("revoked", actor=api_key_name, user_email=user_email, provider=provider,
                     outcome="ok" if provider_revoked else "local_only", connection=connection)
    return provider_revoked


def granted_scopes(user_email: str, provider: str) -> list[str]:
    """The scopes of the user's stored grant (none without a credential), as the provider
    granted them."""
    with db.engine.connect() as connection:
        row = _read(connection, user_email, provider)
    return row.scopes.split() if row is not None else []


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
            **({"account": row.account} if row.account is not None else {}),
        }
        for row in rows
    ]
